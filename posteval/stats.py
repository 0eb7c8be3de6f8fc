"""Seeded, vectorised percentile-bootstrap confidence intervals.

Every interval resamples examples with replacement. A corpus-level metric (BLEU, macro F1) is recomputed on
each resample from summed per-example sufficient statistics: a resample is a row of example counts, so one
matrix product ``counts @ stats`` gives the summed statistics of a whole block of resamples at once.
Resamples are drawn in blocks to bound memory; the draws do not depend on the block size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeAlias

import numpy as np
import scipy.sparse

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# Index draws held in memory at once (int64, so 32 MB).
_BLOCK_ELEMENTS = 4_000_000

Stats: TypeAlias = np.ndarray | scipy.sparse.sparray | scipy.sparse.spmatrix
ScoreFn: TypeAlias = Callable[[np.ndarray], np.ndarray]


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
    scores: Sequence[float],
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
