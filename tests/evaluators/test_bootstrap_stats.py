"""Seeded, vectorised bootstrap: the same resamples a naive loop would draw, summed by matrix products."""

from __future__ import annotations

import numpy as np
import pytest

from posteval.judging import stats
from posteval.judging.stats import (
    bootstrap_sums,
    mean_ci,
    percentile_interval,
    resample_counts,
    resample_indices,
)


def test_resample_indices_are_reproducible_for_a_seed() -> None:
    assert np.array_equal(resample_indices(50, 20, seed=3), resample_indices(50, 20, seed=3))


def test_resample_indices_differ_between_seeds() -> None:
    assert not np.array_equal(resample_indices(50, 20, seed=3), resample_indices(50, 20, seed=4))


def test_resample_indices_do_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = resample_indices(10, 30, seed=1)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 70)  # blocks of 7 resamples
    assert np.array_equal(resample_indices(10, 30, seed=1), whole)


def test_resample_counts_count_each_example_per_row() -> None:
    indices = np.array([[0, 0, 2], [1, 2, 2]])
    assert resample_counts(indices, 3).tolist() == [[2.0, 0.0, 1.0], [0.0, 1.0, 2.0]]


def test_bootstrap_sums_equal_summing_each_resample() -> None:
    values = np.arange(24, dtype=float).reshape(8, 3)
    expected = values[resample_indices(8, 40, seed=5)].sum(axis=1)
    assert np.allclose(bootstrap_sums(values, n_resamples=40, seed=5), expected)


def test_bootstrap_sums_are_independent_of_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.arange(30, dtype=float).reshape(10, 3)
    whole = bootstrap_sums(values, n_resamples=25, seed=2)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 30)
    assert np.allclose(bootstrap_sums(values, n_resamples=25, seed=2), whole)


def test_percentile_interval_is_the_two_tailed_quantiles() -> None:
    samples = np.arange(101, dtype=float)
    assert percentile_interval(samples, 0.5) == (25.0, 75.0)


def test_mean_ci_equals_the_naive_bootstrap() -> None:
    scores = [0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0]
    means = np.asarray(scores)[resample_indices(7, 200, seed=9)].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    assert mean_ci(scores, n_resamples=200, seed=9) == pytest.approx((low, high), rel=1e-12)


def test_mean_ci_of_no_scores_is_none() -> None:
    assert mean_ci([]) == (None, None)


def test_mean_ci_without_resamples_is_none() -> None:
    assert mean_ci([1.0, 0.0], n_resamples=0) == (None, None)


def test_mean_ci_of_one_example_is_that_example() -> None:
    assert mean_ci([0.75], n_resamples=50) == (0.75, 0.75)
