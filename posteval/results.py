"""Result types shared by evaluators, the runner and the database layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricResult:
    """One metric's outcome on one dataset.

    ``per_example`` holds one score per example, in input order, where the metric decomposes per example
    (accuracy, exact match, ROUGE); corpus-level metrics such as BLEU keep per-sentence scores there for
    inspection, but their ``value`` is the corpus value. ``signature`` records library versions and options
    so a stored number can always be explained, in the spirit of sacrebleu's signatures.
    """

    name: str
    value: float
    higher_is_better: bool
    n: int
    signature: str
    per_example: list[float] | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunDetailResult:
    """A report of one dataset (confusion matrix, per-class table...): details, never a compared number."""

    name: str
    n: int
    signature: str
    details: dict[str, Any] = field(default_factory=dict)
