"""Numbers as text, the same in every view (terminal, HTML report, nightly summary, gate messages): a value
in a format spec, or a dash where it is missing (None) or undefined (NaN)."""

from __future__ import annotations

import math
from typing import Any

DASH = "-"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value: Any, spec: str = ".4f", *, missing: str = DASH) -> str:
    """``value`` formatted by ``spec`` (``"d"`` takes a float that holds an integer), else ``missing``."""
    if _missing(value):
        return missing
    return format(int(value) if spec.endswith("d") else value, spec)


def ci(low: Any, high: Any, spec: str = ".4f", *, missing: str = DASH) -> str:
    """A confidence interval as ``[low, high]`` in ``spec``, else ``missing`` when either end is."""
    if _missing(low) or _missing(high):
        return missing
    return f"[{format(low, spec)}, {format(high, spec)}]"
