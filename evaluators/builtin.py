"""Imports every built-in metric family so that their metrics register."""

from posteval.evaluators import choice, classification, generation, judged, perplexity, structured, text  # noqa: F401
