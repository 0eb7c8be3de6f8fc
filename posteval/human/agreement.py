"""Agreement statistics: Krippendorff's alpha between raters, Cohen's kappa between a judge and humans.

Alpha is computed here from its coincidence matrix (Krippendorff, "Computing Krippendorff's Alpha-
Reliability", 2011): the ``krippendorff`` package on PyPI is GPL-3.0, which an Apache-2.0 project does not
take as a dependency, and Fleiss' kappa cannot take raters who labelled different items. The tests check it
against the paper's worked example. Kappa itself comes from scikit-learn; this module adds the rounding to
the scale's points, a bootstrap CI over examples and the items where judge and humans disagree most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from posteval.judging.stats import iter_resample_indices, percentile_interval

Level = Literal["nominal", "ordinal", "interval"]
KAPPA_RESAMPLES = 1000  # each resample is one scikit-learn call


def _distances(values: np.ndarray, counts: np.ndarray, level: Level) -> np.ndarray:
    """Squared distance between every two values of the domain, for the level of measurement."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    cumulative = np.concatenate([[0.0], np.cumsum(counts)])
    ranks = np.arange(len(values))
    low, high = np.minimum.outer(ranks, ranks), np.maximum.outer(ranks, ranks)
    between = cumulative[high + 1] - cumulative[low]  # n_g summed over the ranks from c to k
    return (between - (counts[low] + counts[high]) / 2.0) ** 2


def krippendorff_alpha(reliability: Sequence[Sequence[float]], *, level: Level = "ordinal") -> float:
    """Krippendorff's alpha of a raters x units matrix (NaN where a rater did not label a unit).

    Units with fewer than two labels carry no pairs and are left out. NaN when no unit has two labels or
    every pairable label is the same value (no expected disagreement).
    """
    data = np.asarray(reliability, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"reliability data must be raters x units, got shape {data.shape}")
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    values = np.unique(pairable[~np.isnan(pairable)])
    if len(values) < 2:
        return float("nan")
    index = {value: i for i, value in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for unit in pairable.T:
        labels = [index[v] for v in unit[~np.isnan(unit)]]
        unit_counts = np.bincount(labels, minlength=len(values)).astype(float)
        pairs = np.outer(unit_counts, unit_counts) - np.diag(unit_counts)  # ordered pairs, no self-pairs
        coincidence += pairs / (len(labels) - 1)
    counts = coincidence.sum(axis=1)
    total = counts.sum()
    delta = _distances(values, counts, level)
    observed = (coincidence * delta).sum()
    expected = (np.outer(counts, counts) * delta).sum() / (total - 1)
    return float(1.0 - observed / expected) if expected > 0 else float("nan")


def nearest_point(values: Sequence[float], scale: Sequence[float]) -> list[float]:
    """Each value moved to the nearest point of ``scale`` (a tie goes to the higher point)."""
    points = np.asarray(sorted(scale), dtype=float)
    out = []
    for value in values:
        gaps = np.abs(points - value)
        out.append(float(points[np.flatnonzero(gaps == gaps.min())[-1]]))
    return out


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa of judge against humans on the same items, with its bootstrap CI."""

    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    weights: str | None


def cohen_kappa(
    judge: Sequence[float],
    human: Sequence[float],
    *,
    scale: Sequence[float],
    weights: Literal["quadratic", "linear"] | None = "quadratic",
    n_resamples: int = KAPPA_RESAMPLES,
    seed: int = 0,
) -> Kappa:
    """scikit-learn's ``cohen_kappa_score`` of the two ratings moved to the scale's points, and a percentile
    bootstrap CI over items (resamples where kappa is undefined, one category only, are left out)."""
    from sklearn.metrics import cohen_kappa_score

    if len(judge) != len(human):
        raise ValueError(f"{len(judge)} judge ratings for {len(human)} human ratings")
    points = sorted(float(p) for p in scale)
    # the scale's points as category indices (a 0.5 is no class to scikit-learn; its weights use the
    # labels' positions anyway)
    a = np.asarray([points.index(v) for v in nearest_point(judge, points)])
    b = np.asarray([points.index(v) for v in nearest_point(human, points)])
    labels = list(range(len(points)))
    if len(a) == 0:
        return Kappa(float("nan"), None, None, 0, weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(cohen_kappa_score(a, b, labels=labels, weights=weights))
        samples = []
        for rows in iter_resample_indices(len(a), n_resamples, seed):
            for row in rows:
                k = float(cohen_kappa_score(a[row], b[row], labels=labels, weights=weights))
                if not np.isnan(k):
                    samples.append(k)
    low, high = percentile_interval(np.asarray(samples)) if samples else (None, None)
    return Kappa(value, low, high, len(a), weights)


def largest_disagreements(
    keys: Sequence[str], judge: Sequence[float], human: Sequence[float], *, top: int = 10
) -> list[tuple[str, float, float]]:
    """The ``top`` items where judge and humans differ most: (key, judge, human), largest gap first."""
    gaps = sorted(zip(keys, judge, human, strict=True), key=lambda item: (-abs(item[1] - item[2]), item[0]))
    return [(key, j, h) for key, j, h in gaps[:top] if j != h]
