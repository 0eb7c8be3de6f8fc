"""Catastrophic forgetting: the fine-tune against its base model on the suite's general sets.

Per metric of every general dataset: the change against the base, a paired test on per-example scores
where the metric is their mean, and for 0/1 metrics the share of examples the base got right that the
fine-tune gets wrong. Corpus metrics (perplexity) count as significantly worse when the fine-tune's 95% CI
lies wholly beyond the base value (test ``ci_exclusion``; the p-value is then reported as alpha/2 or 1).
A metric forgets when it got worse by more than ``tolerance`` (relative to the base value) and that test
is significant; the verdict is ``forgetting`` if any metric forgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from posteval.results import MetricResult
from posteval.stats import decomposes, paired_compare, worse_beyond_ci


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
    p_value: float | None
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
    p_value: float | None = None
    test, forgotten = "ci_exclusion", None
    paired_ok = (
        base.per_example is not None
        and tuned.per_example is not None
        and decomposes(base.value, base.per_example)
        and decomposes(tuned.value, tuned.per_example)
    )
    if paired_ok and base.per_example is not None and tuned.per_example is not None:
        paired = paired_compare(base.per_example, tuned.per_example, seed=seed)
        p_value, test = paired.p_value, paired.test
        significant = paired.p_value < options.alpha
        if paired.lost is not None:
            right_before = sum(1 for v in base.per_example if v == 1)
            forgotten = paired.lost / right_before if right_before else 0.0
    else:  # a corpus metric (perplexity): the fine-tune's own CI must lie beyond the base value
        significant = worse_beyond_ci(
            base.value, tuned.ci_low, tuned.ci_high, higher_is_better=base.higher_is_better
        )
        p_value = None
    forgets = worsening > options.tolerance and significant
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
            f"({worst.relative_worsening:+.1%} worse, "
            + (f"p={worst.p_value:.2g})" if worst.p_value is not None else "beyond the fine-tune's 95% CI)")
        )
        return ForgettingReport("forgetting", reason, changes)
    reason = f"no general metric got worse by more than {options.tolerance:.0%} with p < {options.alpha}"
    return ForgettingReport("none", reason, changes)
