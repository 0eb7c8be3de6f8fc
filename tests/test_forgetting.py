"""Paired statistics and the forgetting verdict, each against a direct computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binomtest

from posteval.judging.forgetting import ForgettingOptions, assess_forgetting, compare_metric
from posteval.judging.stats import mcnemar_exact, paired_compare, paired_permutation_pvalue
from posteval.results import MetricResult


def _result(name: str, per_example: list[float], higher_is_better: bool = True) -> MetricResult:
    return MetricResult(
        name, float(np.mean(per_example)), higher_is_better, len(per_example), "sig", per_example
    )


def test_mcnemar_equals_a_binomial_test_of_the_discordant_pairs() -> None:
    before = [1] * 10 + [0] * 5 + [1] * 3
    after = [0] * 10 + [0] * 5 + [1] * 2 + [0]
    p, lost, gained = mcnemar_exact(before, after)
    assert (lost, gained) == (11, 0)
    assert p == binomtest(0, 11, 0.5).pvalue


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == (1.0, 0, 0)


def test_permutation_pvalue_approaches_the_exact_sign_flip_distribution() -> None:
    before = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    after = before + np.array([0.5, 0.4, 0.6, 0.4, -0.1, 0.5])
    diffs = after - before
    flips = [abs((np.array(signs) * diffs).mean()) for signs in itertools.product([-1, 1], repeat=6)]
    exact = float(np.mean(np.array(flips) >= abs(diffs.mean()) - 1e-12))
    assert paired_permutation_pvalue(before, after, n_resamples=20_000) == pytest.approx(exact, abs=0.01)


def test_paired_compare_picks_mcnemar_for_binary_and_permutation_otherwise() -> None:
    assert paired_compare([1, 0, 1, 1], [1, 1, 0, 0]).test == "mcnemar_exact"
    assert paired_compare([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]).test == "paired_permutation"


def test_forgotten_share_counts_base_right_then_tuned_wrong() -> None:
    base = _result("exact_match", [1, 1, 1, 1, 0, 0, 1, 1])
    tuned = _result("exact_match", [0, 1, 0, 1, 0, 1, 1, 1])
    change = compare_metric("qa", base, tuned, ForgettingOptions())
    assert change.forgotten_share == pytest.approx(2 / 6)
    assert change.relative_worsening == pytest.approx((0.75 - 0.625) / 0.75)
    assert change.test == "mcnemar_exact"


def test_significant_worsening_beyond_tolerance_is_forgetting() -> None:
    base = _result("exact_match", [1.0] * 40)
    tuned = _result("exact_match", [1.0] * 20 + [0.0] * 20)
    report = assess_forgetting([("qa", [base], [tuned])], ForgettingOptions(tolerance=0.05, alpha=0.05))
    assert report.verdict == "forgetting"
    assert report.changes[0].forgets


def test_worse_but_within_tolerance_is_not_forgetting() -> None:
    base = _result("perplexity", [10.0, 11.0, 12.0, 13.0] * 10, higher_is_better=False)
    tuned = _result("perplexity", [10.2, 11.2, 12.2, 13.2] * 10, higher_is_better=False)
    report = assess_forgetting([("general", [base], [tuned])], ForgettingOptions(tolerance=0.05))
    assert report.verdict == "none"
    assert report.changes[0].relative_worsening == pytest.approx(0.2 / 11.5)


def test_no_general_results_is_unknown() -> None:
    report = assess_forgetting([], ForgettingOptions())
    assert report.verdict == "unknown"


def _perplexity(nll_per_token: list[float], tokens: list[int]) -> MetricResult:
    from posteval.evaluators import EvalInputs, resolve_metric

    inputs = EvalInputs(
        predictions=[""] * len(tokens),
        logprob_sums=[-r * t for r, t in zip(nll_per_token, tokens, strict=True)],
        token_counts=tokens,
        byte_counts=[4 * t for t in tokens],
        n_bootstrap=500,
    )
    return resolve_metric("perplexity").compute(inputs)


def test_corpus_perplexity_is_judged_by_a_paired_bootstrap_of_the_corpus_value() -> None:
    # Long texts got worse, many short ones better: the per-text mean improves, the corpus worsens.
    tokens = [400] * 20 + [10] * 20
    base = _perplexity([2.0] * 20 + [4.0] * 20, tokens)
    tuned = _perplexity([2.3] * 20 + [3.5] * 20, tokens)
    assert np.mean(tuned.per_example or []) < np.mean(base.per_example or [])
    assert tuned.value > base.value * 1.05
    change = compare_metric("general", base, tuned, ForgettingOptions(tolerance=0.05), n_resamples=500)
    # Every resample of 40 texts holds long texts, so every resampled delta is positive: p is floored.
    assert (change.test, change.p_value, change.forgets) == ("paired_bootstrap", 1 / 501, True)


def test_corpus_worsening_that_resampling_cannot_confirm_is_not_forgetting() -> None:
    base = _perplexity([2.0, 3.0, 2.0, 3.0], [10, 10, 10, 10])
    tuned = _perplexity([3.0, 2.0, 3.0, 2.1], [10, 10, 10, 10])
    change = compare_metric("general", base, tuned, ForgettingOptions(tolerance=0.0), n_resamples=500)
    assert change.test == "paired_bootstrap"
    assert change.p_value is not None and change.p_value > 0.5
    assert not change.forgets
