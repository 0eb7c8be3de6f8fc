"""Human metrics from stored labels: ``human_score`` (the rubric's mean) and ``human_win_rate`` (against
the base run), each a metric like any other: a value with a bootstrap CI, one score per labelled example
(the mean over raters), so comparisons and gates pair them like any metric. Details hold each rater's own
value and, with two raters or more, their agreement as Krippendorff's alpha (ordinal)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from posteval.evaluators.common import make_signature
from posteval.human.agreement import krippendorff_alpha
from posteval.inputs.suite import HUMAN_METRICS
from posteval.judging.stats import mean_ci
from posteval.results import MetricResult

METRIC_OF_KIND = dict(zip(("score", "pair"), HUMAN_METRICS, strict=True))


@dataclass(frozen=True)
class StoredLabel:
    """A label as stored: example, rater, criterion ("" for a pair) and value."""

    example: str
    rater: str
    criterion: str
    value: float


def _by_rater(labels: Sequence[StoredLabel]) -> dict[str, dict[str, float]]:
    """rater -> example -> the rater's value (the mean over criteria for rubric scores)."""
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for label in labels:
        grouped[label.rater][label.example].append(label.value)
    return {r: {k: float(np.mean(v)) for k, v in per.items()} for r, per in sorted(grouped.items())}


def human_metric(
    kind: str, labels: Sequence[StoredLabel], *, n_resamples: int, seed: int, base_run: str | None = None
) -> tuple[list[str], MetricResult]:
    """The labelled example keys (sorted) and the human metric of ``kind`` ("score" or "pair") on them."""
    name = METRIC_OF_KIND[kind]
    raters = _by_rater(labels)
    keys = sorted({label.example for label in labels})
    per_example = [float(np.mean([v[k] for v in raters.values() if k in v])) for k in keys]
    low, high = mean_ci(per_example, n_resamples=n_resamples, seed=seed)
    matrix = [[values.get(k, np.nan) for k in keys] for values in raters.values()]
    alpha = krippendorff_alpha(matrix, level="ordinal") if len(raters) >= 2 else float("nan")
    criteria = sorted({label.criterion for label in labels if label.criterion})
    details = {
        "raters": {r: {"value": float(np.mean(list(v.values()))), "n": len(v)} for r, v in raters.items()},
        "krippendorff_alpha": None if np.isnan(alpha) else alpha,
        "alpha_level": "ordinal",
        "labels": len(labels),
        **({"criteria": criteria} if kind == "score" else {"base_run": base_run}),
    }
    options = {"criteria": criteria} if kind == "score" else {"against": base_run}
    signature = make_signature(name, options, raters=len(raters), bootstrap=n_resamples, seed=seed)
    result = MetricResult(
        name=name,
        value=float(np.mean(per_example)),
        higher_is_better=True,
        n=len(keys),
        signature=signature,
        per_example=per_example,
        ci_low=low,
        ci_high=high,
        details=details,
    )
    return keys, result
