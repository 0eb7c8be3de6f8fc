"""posteval: evaluate every fine-tuned checkpoint, keep every result, and catch regressions."""

__version__ = "0.1.0"
