"""The comparison core: one metric of two runs, example by example, however the metric aggregates.

The gate, ``posteval compare`` and the forgetting check all call :func:`compare_samples`. What is tested
follows how the metric declares its aggregation (see :class:`~posteval.results.MetricResult`):

- a mean of per-example scores: exact McNemar for 0/1 scores, a sign-flip permutation test otherwise, and a
  paired bootstrap CI of the mean difference; the flipped examples are listed;
- a corpus statistic (macro F1, BLEU, chrF, perplexity): a paired bootstrap of the statistic itself,
  recomputed by its aggregator from both runs' per-example sufficient statistics on the same resampled
  examples; the p-value is twice the smaller share of resampled deltas on either side of 0;
- anything else (a corpus metric stored without statistics, examples that differ between the runs): no
  test (``test`` is ``none``, p-value and CI are None), which never counts as significant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from posteval.judging.stats import (
    DEFAULT_RESAMPLES,
    PairedComparison,
    decomposes,
    paired_bootstrap,
    paired_compare,
)
from posteval.results import MetricResult

MAX_FLIPS = 50  # flipped example keys kept per direction and metric


@dataclass(frozen=True)
class MetricSample:
    """One run's data for one metric: the value, and per example its score and sufficient statistics."""

    value: float | None
    higher_is_better: bool
    scores: Mapping[str, float | None] = field(default_factory=dict)  # example key -> score
    stats: Mapping[str, Sequence[float]] = field(default_factory=dict)  # example key -> statistics
    aggregation: Mapping[str, Any] | None = None  # None: the value is the mean of the scores


@dataclass(frozen=True)
class PairedResult:
    """The outcome of the core: delta (candidate minus baseline), its CI, the p-value, the flips."""

    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    n: int
    improved: list[str] = field(default_factory=list)  # keys wrong in the baseline, right now
    worsened: list[str] = field(default_factory=list)  # keys right in the baseline, wrong now
    lost: int | None = None  # 0/1 scores: how many examples were right before and are wrong now
    right_before: int | None = None  # 0/1 scores: how many examples the baseline got right


def _delta(before: MetricSample, after: MetricSample) -> float | None:
    if before.value is None or after.value is None:
        return None
    delta = after.value - before.value
    return None if np.isnan(delta) else float(delta)


def compare_samples(
    before: MetricSample,
    after: MetricSample,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedResult:
    """Compare ``after`` with ``before`` on the examples both have; see the module docstring for the test."""
    delta = _delta(before, after)
    corpus = before.aggregation is not None or after.aggregation is not None
    if corpus:
        keys = sorted(set(before.stats) & set(after.stats))
        same = bool(keys) and len(keys) == len(before.stats) == len(after.stats)
        if not same or before.aggregation != after.aggregation or after.aggregation is None:
            return PairedResult(delta, None, None, None, "none", len(keys))
        return _corpus(before, after, keys, delta, n_resamples, seed)
    keys = sorted(
        k for k in set(before.scores) & set(after.scores) if None not in (before.scores[k], after.scores[k])
    )
    a = [float(before.scores[k] or 0.0) for k in keys]
    b = [float(after.scores[k] or 0.0) for k in keys]
    paired_ok = (
        bool(keys)
        and len(keys) == len(before.scores) == len(after.scores)
        and decomposes(before.value, a)
        and decomposes(after.value, b)
    )
    if not paired_ok:
        return PairedResult(delta, None, None, None, "none", len(keys))
    paired = paired_compare(a, b, n_resamples=n_resamples, seed=seed)
    return _with_flips(paired, keys, a, b, delta, before.higher_is_better)


def _corpus(
    before: MetricSample,
    after: MetricSample,
    keys: list[str],
    delta: float | None,
    n_resamples: int,
    seed: int,
) -> PairedResult:
    from posteval.evaluators.base import aggregate  # the aggregators live with the metrics

    spec = dict(after.aggregation or {})
    widths = {len(before.stats[k]) for k in keys} | {len(after.stats[k]) for k in keys}
    if len(widths) != 1:  # e.g. a label set that changed between the runs
        return PairedResult(delta, None, None, None, "none", len(keys))
    a = np.asarray([before.stats[k] for k in keys], dtype=np.float64)
    b = np.asarray([after.stats[k] for k in keys], dtype=np.float64)
    paired = paired_bootstrap(a, b, lambda sums: aggregate(spec, sums), n_resamples=n_resamples, seed=seed)
    return PairedResult(delta, paired.ci_low, paired.ci_high, paired.p_value, paired.test, paired.n)


def _with_flips(
    paired: PairedComparison,
    keys: list[str],
    before: list[float],
    after: list[float],
    delta: float | None,
    higher_is_better: bool,
) -> PairedResult:
    improved: list[str] = []
    worsened: list[str] = []
    right_before = None
    if paired.lost is not None:  # 0/1 scores: the flipped examples in both directions
        good, bad = (1.0, 0.0) if higher_is_better else (0.0, 1.0)
        improved = [k for k, x, y in zip(keys, before, after, strict=True) if x == bad and y == good]
        worsened = [k for k, x, y in zip(keys, before, after, strict=True) if x == good and y == bad]
        right_before = sum(1 for x in before if x == good)
    lost = len(worsened) if paired.lost is not None else None
    return PairedResult(
        delta,
        paired.ci_low,
        paired.ci_high,
        paired.p_value,
        paired.test,
        paired.n,
        improved[:MAX_FLIPS],
        worsened[:MAX_FLIPS],
        lost,
        right_before,
    )


def sample_of(result: MetricResult, keys: Sequence[str]) -> MetricSample:
    """A :class:`MetricSample` of an in-memory MetricResult whose examples are ``keys``, in order."""
    value = None if np.isnan(result.value) else float(result.value)
    scores = (
        {}
        if result.per_example is None or len(result.per_example) != len(keys)
        else dict(zip(keys, result.per_example, strict=True))
    )
    stats = (
        {}
        if result.stats is None or len(result.stats) != len(keys)
        else dict(zip(keys, result.stats, strict=True))
    )
    return MetricSample(value, result.higher_is_better, scores, stats, result.aggregation)
