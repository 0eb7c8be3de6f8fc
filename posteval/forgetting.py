"""Catastrophic forgetting: the fine-tune against its base model on the suite's general sets.

Per metric of every general dataset: the change against the base, a paired test on per-example scores,
and for 0/1 metrics the share of examples the base got right that the fine-tune gets wrong. A metric
forgets when it got worse by more than ``tolerance`` (relative to the base value) and the paired test is
significant at ``alpha``; the verdict is ``forgetting`` if any metric forgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from posteval.results import MetricResult
from posteval.stats import paired_compare


class ForgettingOptions(BaseModel):
    """Tolerance of the forgetting check (the suite's ``forgetting`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tolerance: float = Field(0.05, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1)


@dataclass(frozen=True)
class MetricChange:
    """One general metric, base against fine-tune."""

    dataset: str
    metric: str
    base: float
    tuned: float
    delta: float
    relative_worsening: float
    p_value: float
    test: str
    forgotten_share: float | None
    forgets: bool


@dataclass(frozen=True)
class ForgettingReport:
    """The forgetting check's findings."""

    verdict: Literal["forgetting", "none", "unknown"]
    reason: str
    changes: list[MetricChange] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        return asdict(self)


def compare_metric(
    dataset: str, base: MetricResult, tuned: MetricResult, options: ForgettingOptions, *, seed: int = 0
) -> MetricChange:
    """How much worse ``tuned`` is than ``base`` on one metric, and whether that is forgetting."""
    sign = 1.0 if base.higher_is_better else -1.0
    scale = abs(base.value) if base.value else 1.0
    worsening = sign * (base.value - tuned.value) / scale
    p_value, test, forgotten = 1.0, "none", None
    if base.per_example is not None and tuned.per_example is not None:
        paired = paired_compare(base.per_example, tuned.per_example, seed=seed)
        p_value, test = paired.p_value, paired.test
        if paired.lost is not None:
            right_before = sum(1 for v in base.per_example if v == 1)
            forgotten = paired.lost / right_before if right_before else 0.0
    forgets = worsening > options.tolerance and p_value < options.alpha
    return MetricChange(
        dataset=dataset,
        metric=base.name,
        base=base.value,
        tuned=tuned.value,
        delta=tuned.value - base.value,
        relative_worsening=worsening,
        p_value=p_value,
        test=test,
        forgotten_share=forgotten,
        forgets=forgets,
    )


def assess_forgetting(
    pairs: Sequence[tuple[str, Sequence[MetricResult], Sequence[MetricResult]]],
    options: ForgettingOptions,
    *,
    seed: int = 0,
) -> ForgettingReport:
    """Compare (dataset, base results, tuned results) triples; unknown when there is nothing to compare."""
    changes = []
    for dataset, base_results, tuned_results in pairs:
        tuned_by_name = {r.name: r for r in tuned_results}
        for base in base_results:
            tuned = tuned_by_name.get(base.name)
            if tuned is not None and not (math.isnan(base.value) or math.isnan(tuned.value)):
                changes.append(compare_metric(dataset, base, tuned, options, seed=seed))
    if not changes:
        return ForgettingReport("unknown", "no general dataset was evaluated on both base and fine-tune")
    forgetting = [c for c in changes if c.forgets]
    if forgetting:
        worst = max(forgetting, key=lambda c: c.relative_worsening)
        reason = (
            f"{len(forgetting)} general metric(s) got significantly worse than the base; worst "
            f"{worst.dataset}/{worst.metric}: {worst.base:.4g} -> {worst.tuned:.4g} "
            f"({worst.relative_worsening:+.1%} worse, p={worst.p_value:.2g})"
        )
        return ForgettingReport("forgetting", reason, changes)
    reason = f"no general metric got worse by more than {options.tolerance:.0%} with p < {options.alpha}"
    return ForgettingReport("none", reason, changes)
