"""Imports every built-in metric family so that their metrics register."""

from evaluators import classification, generation, structured, text  # noqa: F401
