"""Seeded, vectorised percentile-bootstrap confidence intervals and paired tests.

Every interval resamples examples with replacement. A corpus-level metric (BLEU, macro F1) is recomputed on
each resample from summed per-example sufficient statistics: a resample is a row of example counts, so one
matrix product ``counts @ stats`` gives the summed statistics of a whole block of resamples at once.
Resamples are drawn in blocks to bound memory; the draws do not depend on the block size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import scipy.sparse

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# Index draws held in memory at once (int64, so 32 MB).
_BLOCK_ELEMENTS = 4_000_000

Stats: TypeAlias = np.ndarray | scipy.sparse.sparray | scipy.sparse.spmatrix
ScoreFn: TypeAlias = Callable[[np.ndarray], np.ndarray]
Scores: TypeAlias = Sequence[float] | np.ndarray  # per-example scores, as a list or an array


def iter_resample_indices(
    n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Iterator[np.ndarray]:
    """Blocks of bootstrap index rows, (block, n) each, drawn in order from one seeded generator."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n_resamples, block):
        yield rng.integers(0, n, size=(min(block, n_resamples - start), n))


def resample_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """An (n_resamples, n) matrix of bootstrap indices: the rows every interval here resamples with."""
    blocks = list(iter_resample_indices(n, n_resamples, seed))
    return np.concatenate(blocks) if blocks else np.empty((0, n), dtype=np.int64)


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` examples occurs in each row of ``indices``: a (rows, n) float matrix."""
    rows = indices.shape[0]
    offsets = (np.arange(rows, dtype=np.int64) * n)[:, None]
    counts = np.bincount((indices + offsets).ravel(), minlength=rows * n)
    return counts.reshape(rows, n).astype(np.float64)


def bootstrap_sums(stats: Stats, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Per-example statistics, an (n, k) dense or sparse matrix, summed per resample: (n_resamples, k)."""
    n, k = stats.shape
    sums = np.empty((n_resamples, k), dtype=np.float64)
    start = 0
    for indices in iter_resample_indices(n, n_resamples, seed):
        counts = resample_counts(indices, n)
        # (stats.T @ counts.T).T keeps the product dense when stats is sparse.
        sums[start : start + len(indices)] = np.asarray(stats.T @ counts.T).T
        start += len(indices)
    return sums


def percentile_interval(samples: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of bootstrap ``samples`` at ``confidence``."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def stats_ci(
    stats: Stats,
    score: ScoreFn,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """CI of a corpus metric: ``score`` maps summed statistics (rows, k) to one score per row.

    Returns (None, None) for no examples or no resamples.
    """
    if stats.shape[0] == 0 or n_resamples < 1:
        return None, None
    sums = bootstrap_sums(stats, n_resamples=n_resamples, seed=seed)
    return percentile_interval(np.asarray(score(sums), dtype=np.float64), confidence)


def mean_ci(
    scores: Scores,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the mean of per-example ``scores``; (None, None) for no examples."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    n = values.shape[0]
    return stats_ci(
        values, lambda sums: sums[:, 0] / n, n_resamples=n_resamples, confidence=confidence, seed=seed
    )


def is_binary(values: np.ndarray) -> bool:
    """Whether every value is 0 or 1."""
    return bool(np.isin(values, (0.0, 1.0)).all())


def mcnemar_exact(before: Scores, after: Scores) -> tuple[float, int, int]:
    """Exact McNemar test on paired 0/1 scores: (two-sided p-value, right->wrong, wrong->right).

    The p-value is the binomial test of the discordant pairs against 1/2; with none it is 1.
    """
    from scipy.stats import binomtest

    a, b = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    lost = int(((a == 1) & (b == 0)).sum())
    gained = int(((a == 0) & (b == 1)).sum())
    if lost + gained == 0:
        return 1.0, lost, gained
    return float(binomtest(min(lost, gained), lost + gained, 0.5).pvalue), lost, gained


def paired_permutation_pvalue(
    before: Scores, after: Scores, *, n_resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided sign-flip permutation test of a zero mean paired difference (add-one smoothed)."""
    diffs = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    if diffs.size == 0 or not diffs.any():
        return 1.0
    observed = abs(diffs.mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    block = max(1, _BLOCK_ELEMENTS // diffs.size)
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        signs = rng.integers(0, 2, size=(rows, diffs.size)) * 2 - 1
        extreme += int((np.abs((signs * diffs).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (n_resamples + 1)


@dataclass(frozen=True)
class PairedComparison:
    """A paired comparison of per-example scores: after minus before, with a CI and a p-value."""

    delta: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    test: str
    n: int
    lost: int | None = None  # 0/1 scores: examples right before and wrong after
    gained: int | None = None  # 0/1 scores: examples wrong before and right after


def paired_compare(
    before: Scores, after: Scores, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> PairedComparison:
    """Compare paired per-example scores: exact McNemar for 0/1 scores, a sign-flip permutation test
    otherwise; the delta's CI is a paired bootstrap of the mean difference. NaN pairs are dropped."""
    a, b = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores differ in length: {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    diffs = b - a
    low, high = mean_ci(diffs, n_resamples=n_resamples, seed=seed)
    delta = float(diffs.mean()) if diffs.size else float("nan")
    if diffs.size and is_binary(a) and is_binary(b):
        p, lost, gained = mcnemar_exact(a, b)
        return PairedComparison(delta, low, high, p, "mcnemar_exact", int(a.size), lost, gained)
    p = paired_permutation_pvalue(a, b, n_resamples=max(n_resamples, 1000), seed=seed)
    return PairedComparison(delta, low, high, p, "paired_permutation", int(a.size))


def decomposes(value: float | None, scores: Scores) -> bool:
    """Whether ``value`` is the mean of the per-example ``scores`` (accuracy, exact match, ROUGE), so a
    paired test on the scores tests the metric itself; corpus metrics (perplexity, BLEU) do not."""
    values = np.asarray(scores, dtype=np.float64)
    if value is None or values.size == 0 or np.isnan(values).any():
        return False
    return bool(abs(values.mean() - value) <= 1e-9 * max(1.0, abs(value)))


def bootstrap_pvalue(deltas: np.ndarray) -> float:
    """Two-sided p-value of a zero delta from bootstrap ``deltas``: twice the smaller share of them on either
    side of 0 (ties count on both sides), at most 1 and at least 1/(B+1) for B resamples."""
    values = np.asarray(deltas, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return 1.0
    share = min(float((values <= 0).mean()), float((values >= 0).mean()))
    return float(min(1.0, max(2.0 * share, 1.0 / (values.size + 1))))


def paired_bootstrap(
    before: Stats,
    after: Stats,
    score: ScoreFn,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> PairedComparison:
    """Paired bootstrap of a corpus statistic: examples are resampled jointly for both runs, ``score`` maps
    each run's summed statistics to the metric, and the delta (after minus before) gets a percentile CI
    and a two-sided p-value (:func:`bootstrap_pvalue`). Resamples where the metric is undefined are left out.
    """
    if before.shape != after.shape:
        raise ValueError(f"paired statistics differ in shape: {before.shape} and {after.shape}")
    n, k = before.shape
    observed = score(np.vstack([_column_sums(before), _column_sums(after)]))
    delta = float(observed[1] - observed[0]) if n else float("nan")
    if n == 0 or n_resamples < 1:
        return PairedComparison(delta, None, None, 1.0, "paired_bootstrap", n)
    joint = (
        scipy.sparse.hstack([before, after], format="csr")
        if scipy.sparse.issparse(before) or scipy.sparse.issparse(after)
        else np.hstack([np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)])
    )
    sums = bootstrap_sums(joint, n_resamples=n_resamples, seed=seed)
    deltas = np.asarray(score(sums[:, k:]), dtype=np.float64) - np.asarray(
        score(sums[:, :k]), dtype=np.float64
    )
    deltas = deltas[~np.isnan(deltas)]
    if deltas.size == 0:
        return PairedComparison(delta, None, None, 1.0, "paired_bootstrap", n)
    low, high = percentile_interval(deltas, confidence)
    return PairedComparison(delta, low, high, bootstrap_pvalue(deltas), "paired_bootstrap", n)


def _column_sums(stats: Stats) -> np.ndarray:
    return np.asarray(stats.sum(axis=0), dtype=np.float64).reshape(-1)
