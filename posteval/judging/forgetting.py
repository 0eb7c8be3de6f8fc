"""Catastrophic forgetting: the fine-tune against its base model on the suite's general sets.

Per metric of every general dataset: the change against the base and a paired test by the comparison core
(:mod:`posteval.judging.paired`, the same as the gate's: McNemar or sign-flip permutation for means of per-
example scores, a paired bootstrap of the statistic for corpus metrics such as perplexity), and for 0/1
metrics the share of examples the base got right that the fine-tune gets wrong. A metric forgets when it got
worse by more than ``tolerance`` (relative to the base value) and that test is significant; the verdict is
``forgetting`` if any metric forgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from posteval.judging.paired import compare_samples, sample_of
from posteval.judging.stats import DEFAULT_RESAMPLES
from posteval.results import MetricResult


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
    dataset: str,
    base: MetricResult,
    tuned: MetricResult,
    options: ForgettingOptions,
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> MetricChange:
    """How much worse ``tuned`` is than ``base`` on one metric, and whether that is forgetting."""
    sign = 1.0 if base.higher_is_better else -1.0
    scale = abs(base.value) if base.value else 1.0
    worsening = sign * (base.value - tuned.value) / scale
    keys = [str(i) for i in range(base.n)]
    paired = compare_samples(
        sample_of(base, keys), sample_of(tuned, keys), n_resamples=n_resamples, seed=seed
    )
    significant = paired.p_value is not None and paired.p_value < options.alpha
    forgotten = None
    if paired.lost is not None and paired.right_before is not None:
        forgotten = paired.lost / paired.right_before if paired.right_before else 0.0
    return MetricChange(
        dataset=dataset,
        metric=base.name,
        base=base.value,
        tuned=tuned.value,
        delta=tuned.value - base.value,
        relative_worsening=worsening,
        p_value=paired.p_value,
        test=paired.test,
        forgotten_share=forgotten,
        forgets=worsening > options.tolerance and significant,
    )


def assess_forgetting(
    pairs: Sequence[tuple[str, Sequence[MetricResult], Sequence[MetricResult]]],
    options: ForgettingOptions,
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> ForgettingReport:
    """Compare (dataset, base results, tuned results) triples; unknown when there is nothing to compare."""
    changes = []
    for dataset, base_results, tuned_results in pairs:
        tuned_by_name = {r.name: r for r in tuned_results}
        for base in base_results:
            tuned = tuned_by_name.get(base.name)
            if tuned is not None and not (math.isnan(base.value) or math.isnan(tuned.value)):
                changes.append(
                    compare_metric(dataset, base, tuned, options, seed=seed, n_resamples=n_resamples)
                )
    if not changes:
        return ForgettingReport("unknown", "no general dataset was evaluated on both base and fine-tune")
    forgetting = [c for c in changes if c.forgets]
    if forgetting:
        worst = max(forgetting, key=lambda c: c.relative_worsening)
        reason = (
            f"{len(forgetting)} general metric(s) got significantly worse than the base; worst "
            f"{worst.dataset}/{worst.metric}: {worst.base:.4g} -> {worst.tuned:.4g} "
            f"({worst.relative_worsening:+.1%} worse, "
            + (f"p={worst.p_value:.2g})" if worst.p_value is not None else "untested)")
        )
        return ForgettingReport("forgetting", reason, changes)
    reason = f"no general metric got worse by more than {options.tolerance:.0%} with p < {options.alpha}"
    return ForgettingReport("none", reason, changes)
