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

    How the metric aggregates decides how two runs are compared. ``aggregation`` None: the value is the mean
    of ``per_example``. Otherwise the value is a corpus statistic: ``stats`` holds each example's sufficient
    statistics (one row per example, in input order) and ``aggregation`` names the registered aggregator
    (``{"fn": name, **params}``) that maps summed statistics back to the value, so a paired bootstrap can
    recompute the metric itself on resampled examples, now or from the stored rows later.
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
    stats: list[list[float]] | None = None
    aggregation: dict[str, Any] | None = None
    # What happened on each example beyond its score (a code problem's executions), stored with the score.
    example_details: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class RunDetailResult:
    """A report of one dataset (confusion matrix, per-class table...): details, never a compared number."""

    name: str
    n: int
    signature: str
    details: dict[str, Any] = field(default_factory=dict)
