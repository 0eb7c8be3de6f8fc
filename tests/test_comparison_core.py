"""The comparison core: sufficient statistics recompute each corpus metric as its own library does, the
paired bootstrap equals a plain loop over the same resamples, and its size holds on null pairs."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import sacrebleu
from sklearn.metrics import f1_score, precision_recall_fscore_support

from posteval.evaluators import EvalInputs, resolve_metric
from posteval.evaluators.base import aggregate
from posteval.evaluators.classification import label_set_stats
from posteval.judging.compare import Comparison, MetricComparison, _notes, _setting_differences
from posteval.judging.paired import MetricSample, compare_samples
from posteval.judging.stats import bootstrap_pvalue, paired_bootstrap, resample_indices

LABELS = ["lease", "nda", "employment", "other"]  # "other" is never a reference
REFERENCES = ["lease", "nda", "employment", "lease", "nda", "lease", "employment", "nda", "lease", "lease"]
# Invalid answers (outside the label set) and "other", a valid label never true.
PREDICTED = ["lease", "<invalid>", "employment", "nda", "nda", "<invalid>", "other", "nda", "lease", "lease"]


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
@pytest.mark.parametrize("measure", ["precision", "recall", "f1"])
def test_label_set_statistics_recompute_scikit_learn_with_invalid_outputs(average: str, measure: str) -> None:
    sums = label_set_stats(REFERENCES, PREDICTED, LABELS).toarray().sum(axis=0, keepdims=True)
    spec = {"fn": "prf_labels", "measure": measure, "average": average, "zero_division": 0}
    expected = precision_recall_fscore_support(
        REFERENCES, PREDICTED, labels=LABELS, average=average, zero_division=0
    )[["precision", "recall", "f1"].index(measure)]
    assert aggregate(spec, sums)[0] == pytest.approx(expected, abs=1e-12)


def test_an_invalid_output_is_a_false_negative_of_its_class_and_no_false_positive() -> None:
    row = label_set_stats(["nda"], ["<invalid>"], LABELS).toarray()[0]
    tp, fp, fn = np.split(row, 3)
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == ([0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0])


def test_f1_results_carry_label_set_statistics_and_their_aggregation() -> None:
    inputs = EvalInputs(predictions=PREDICTED, references=REFERENCES, labels=LABELS)
    result = resolve_metric({"f1": {"average": "macro"}}).compute(inputs)
    assert result.stats is not None and len(result.stats) == len(REFERENCES)
    assert result.aggregation == {"fn": "prf_labels", "measure": "f1", "average": "macro", "zero_division": 0}
    recomputed = aggregate(result.aggregation, np.asarray(result.stats).sum(axis=0, keepdims=True))[0]
    assert recomputed == pytest.approx(f1_score(REFERENCES, PREDICTED, labels=LABELS, average="macro"))


HYPOTHESES = ["the cat sat on the mat", "a dog barked loudly", "it rains", "hello there world", "green tea"]
TARGETS = ["the cat sat on a mat", "the dog barked", "it is raining", "hello world", "green tea please"]


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_sacrebleu_statistics_of_a_resample_give_sacrebleus_corpus_score(name: str) -> None:
    result = resolve_metric(name).compute(EvalInputs(predictions=HYPOTHESES, references=TARGETS))
    assert result.aggregation is not None and result.stats is not None
    picked = [0, 0, 2, 3, 4, 4, 4]  # a resample: examples drawn with replacement
    sums = np.asarray(result.stats)[picked].sum(axis=0, keepdims=True)
    hyps, refs = [HYPOTHESES[i] for i in picked], [[TARGETS[i] for i in picked]]
    expected = (sacrebleu.corpus_bleu if name == "bleu" else sacrebleu.corpus_chrf)(hyps, refs).score
    assert aggregate(result.aggregation, sums)[0] == pytest.approx(expected, abs=1e-9)


def test_perplexity_statistics_give_exp_of_total_nll_over_total_tokens() -> None:
    inputs = EvalInputs(
        predictions=["", "", ""],
        logprob_sums=[-20.0, -3.0, -7.5],
        token_counts=[10, 2, 5],
        byte_counts=[40, 8, 20],
    )
    result = resolve_metric("perplexity").compute(inputs)
    assert result.aggregation is not None and result.stats is not None
    sums = np.asarray(result.stats)[[0, 2, 2]].sum(axis=0, keepdims=True)
    assert aggregate(result.aggregation, sums)[0] == pytest.approx(math.exp((20 + 7.5 * 2) / (10 + 5 * 2)))


def test_paired_bootstrap_equals_a_plain_scikit_learn_loop_over_the_same_resamples() -> None:
    rng = np.random.default_rng(5)
    n, resamples, seed = 60, 200, 3
    truth = rng.choice(LABELS[:3], n)
    before = np.where(rng.random(n) < 0.8, truth, rng.choice([*LABELS, "<invalid>"], n))
    after = np.where(rng.random(n) < 0.6, truth, rng.choice([*LABELS, "<invalid>"], n))
    spec = {"fn": "prf_labels", "measure": "f1", "average": "macro", "zero_division": 0}
    ours = paired_bootstrap(
        label_set_stats(list(truth), list(before), LABELS),
        label_set_stats(list(truth), list(after), LABELS),
        lambda sums: aggregate(spec, sums),
        n_resamples=resamples,
        seed=seed,
    )

    def f1(pred: np.ndarray, rows: np.ndarray) -> float:
        return float(f1_score(truth[rows], pred[rows], labels=LABELS, average="macro", zero_division=0))

    deltas = np.array([f1(after, rows) - f1(before, rows) for rows in resample_indices(n, resamples, seed)])
    assert ours.delta == pytest.approx(f1(after, np.arange(n)) - f1(before, np.arange(n)))
    assert (ours.ci_low, ours.ci_high) == pytest.approx(tuple(np.quantile(deltas, [0.025, 0.975])))
    share = min((deltas <= 0).mean(), (deltas >= 0).mean())
    assert ours.p_value == pytest.approx(max(min(1.0, 2 * share), 1 / (resamples + 1)))
    assert ours.test == "paired_bootstrap"


def test_bootstrap_pvalue_is_twice_the_smaller_side_floored_at_one_over_b_plus_one() -> None:
    assert bootstrap_pvalue(np.array([0.1] * 99)) == 1 / 100
    assert bootstrap_pvalue(np.zeros(50)) == 1.0  # identical runs: every delta is on both sides
    assert bootstrap_pvalue(np.array([-1.0] * 10 + [1.0] * 30)) == 0.5


def _null_stats(rng: np.random.Generator, truth: np.ndarray, classes: int) -> np.ndarray:
    """Label-set statistics of predictions right with p 0.7, else another class (0.2) or invalid (0.1)."""
    u = rng.random(truth.size)
    shifted = (truth + rng.integers(1, classes, truth.size)) % classes
    predicted = np.where(u < 0.7, truth, np.where(u < 0.9, shifted, -1))
    names = [str(c) for c in range(classes)]
    return label_set_stats([str(t) for t in truth], [str(p) for p in predicted], names).toarray()


def test_paired_bootstrap_of_macro_f1_rejects_at_most_alpha_plus_one_percent_of_null_pairs() -> None:
    """1,000 null pairs (two runs drawn from one model on the same 150 examples), B = 200, alpha 0.05.

    The rejection rate's Monte-Carlo standard error is sqrt(0.05 * 0.95 / 1000) = 0.0069, so a test whose
    true size is 5% stays under 6% here with probability ~0.93; the seeds are fixed, so the run is exact
    (it rejects 5.4%; 2,000 pairs at the same settings reject 5.15%).
    """
    rng = np.random.default_rng(11)
    spec = {"fn": "prf_labels", "measure": "f1", "average": "macro", "zero_division": 0}
    p_values = []
    for sim in range(1000):
        truth = rng.choice(3, 150, p=[0.5, 0.3, 0.2])
        before, after = _null_stats(rng, truth, 3), _null_stats(rng, truth, 3)
        paired = paired_bootstrap(
            before, after, lambda sums: aggregate(spec, sums), n_resamples=200, seed=sim
        )
        p_values.append(paired.p_value)
    assert np.mean(np.array(p_values) < 0.05) <= 0.06


def test_corpus_metrics_without_statistics_are_not_tested_and_never_significant() -> None:
    spec = {"fn": "nll_ratio", "transform": "exp"}
    before = MetricSample(10.0, False, {}, {}, spec)  # e.g. a run stored before statistics were
    after = MetricSample(12.0, False, {}, {"a": [1.0, 1.0]}, spec)
    result = compare_samples(before, after)
    assert (result.test, result.p_value, result.ci_low, result.delta) == ("none", None, None, 2.0)


def test_summary_renders_a_missing_p_value_drop_and_ci() -> None:
    row = MetricComparison(
        "d", "bleu", True, None, 3.0, None, None, None, None, "none", 0, gate={"max_drop": 1, "alpha": 0.05}
    )
    flagged = MetricComparison(**{**row.__dict__, "regression": True})
    assert Comparison("a", "b", [flagged]).summary() == "regression: d/bleu dropped n/a (> 1, p=n/a, none)"
    assert Comparison("a", "b", [row], ["seed 0 -> 1"]).summary() == (
        "no regression: 1 metrics compared, 1 gated; note: seed 0 -> 1"
    )


def _settings(**output: object) -> dict[str, object]:
    base = {"runner": "hf", "dtype": "torch.float32", "max_length": 1024, "max_new_tokens": 6}
    return {
        "datasets": {"d": {"output": base | output, "config_hash": "x", "scoring": {"labels": ["a"]}}},
        "statistics": {"seed": 0, "bootstrap_resamples": 1000},
    }


def test_output_settings_that_differ_are_named_and_others_are_not() -> None:
    assert _setting_differences(_settings(), _settings(), {"d"}) == []
    changed = _setting_differences(_settings(), _settings(dtype="torch.bfloat16"), {"d"})
    assert changed == ["dataset 'd' dtype 'torch.float32' -> 'torch.bfloat16'"]
    assert _setting_differences(_settings(), _settings(dtype="torch.bfloat16"), {"other"}) == []


def test_a_seed_or_bootstrap_size_change_is_a_note() -> None:
    after = _settings()
    after["statistics"] = {"seed": 1, "bootstrap_resamples": 500}
    assert _notes(_settings(), after, ("a", "b")) == ["bootstrap_resamples 1000 -> 500", "seed 0 -> 1"]


def test_terminal_table_html_and_artifact_render_missing_values() -> None:
    from rich.console import Console

    from posteval.views.gate_summary import comparison_records
    from posteval.views.render import comparison_table
    from posteval.views.report import _comparison

    row = MetricComparison("d", "bleu", True, None, 3.0, None, None, None, None, "none", 0, regression=True)
    comparison = Comparison("a" * 12, "b" * 12, [row])
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(comparison_table(comparison))
    text = console.export_text()
    assert "│ d       │ bleu   │        - │    3.0000 │     - │      - │ - │ none │" in text
    html = str(_comparison("a" * 12, comparison, ""))
    assert "dropped n/a" in html and "p=n/a" in html
    frame = comparison.to_frame()
    assert frame.loc[0, ["p_value", "ci_low", "delta"]].isna().all()
    (record,) = comparison_records(comparison)
    assert {k: record[k] for k in ("gate", "baseline", "this run", "delta", "95% CI", "p")} == {
        "gate": "-",
        "baseline": "-",
        "this run": "3.0000",
        "delta": "-",
        "95% CI": "-",
        "p": "-",
    }
