"""Imports every built-in metric family so that their metrics register."""

from posteval.evaluators import (  # noqa: F401
    choice,
    classification,
    code,
    generation,
    judged,
    perplexity,
    structured,
    text,
)
