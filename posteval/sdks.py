"""The vendors' Python SDKs (``openai``, ``anthropic``): optional extras, imported when first needed."""

from __future__ import annotations

import importlib
from typing import Any

from posteval.errors import InputError


def sdk(name: str) -> Any:
    """The vendor SDK ``name``, or an InputError saying which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InputError(f"the {name} SDK is not installed: pip install 'posteval[{name}]'") from exc
