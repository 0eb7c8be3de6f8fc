"""BLEU and chrF equal sacrebleu, ROUGE equals rouge-score, each called directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from posteval.evaluators import EvalInputs, resolve_metric
from posteval.judging.stats import percentile_interval, resample_indices

FIXTURES = {
    "sentences": (
        ["the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "hello there general kenobi"],
        ["the cat is on the mat", "the quick brown fox jumped over the lazy dog", "hello there"],
    ),
    "empty_prediction": (
        ["", "it is raining today in the city"], ["nothing here", "it rains today in the city"],
    ),
    "unicode": (
        ["Ça va très bien, merci !", "東京は晴れです", "naïve café"],
        ["Ça va bien, merci !", "東京は雨です", "naive café"],
    ),
    "one_example": (["the only hypothesis here"], ["the only reference here"]),
}  # fmt: skip
MULTI_HYPOTHESES = ["the cat sat on the mat", "hello world"]
MULTI_REFERENCES = [["the cat is on the mat", "a cat sat on the mat"], "hello big world"]
MULTI_STREAMS = [["the cat is on the mat", "hello big world"], ["a cat sat on the mat", None]]


def compute(spec: str | dict, predictions: list[str], references: list, **kw: int):
    return resolve_metric(spec).compute(EvalInputs(predictions, references, **kw))


# name -> (sacrebleu's corpus function, its sentence function)
SACREBLEU = {
    "bleu": (sacrebleu.corpus_bleu, sacrebleu.sentence_bleu),
    "chrf": (sacrebleu.corpus_chrf, sacrebleu.sentence_chrf),
}


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("name", SACREBLEU)
def test_value_equals_sacrebleus_corpus_score(name: str, fixture: str) -> None:
    hypotheses, references = FIXTURES[fixture]
    corpus_score, _ = SACREBLEU[name]
    assert compute(name, hypotheses, references).value == corpus_score(hypotheses, [references]).score


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("name", SACREBLEU)
def test_per_example_scores_are_sacrebleus_sentence_scores(name: str, fixture: str) -> None:
    hypotheses, references = FIXTURES[fixture]
    _, sentence_score = SACREBLEU[name]
    expected = [sentence_score(h, [r]).score for h, r in zip(hypotheses, references, strict=True)]
    assert compute(name, hypotheses, references).per_example == expected


@pytest.mark.parametrize("name", SACREBLEU)
def test_several_references_per_example_reach_sacrebleu(name: str) -> None:
    corpus_score, _ = SACREBLEU[name]
    expected = corpus_score(MULTI_HYPOTHESES, MULTI_STREAMS).score
    assert compute(name, MULTI_HYPOTHESES, MULTI_REFERENCES).value == expected


@pytest.mark.parametrize(("name", "fixture", "seed"), [("bleu", "sentences", 2), ("chrf", "unicode", 5)])
def test_interval_is_the_percentile_interval_of_sacrebleu_on_each_resample(
    name: str, fixture: str, seed: int
) -> None:
    hypotheses, references = FIXTURES[fixture]
    corpus_score, _ = SACREBLEU[name]
    result = compute(name, hypotheses, references, n_bootstrap=30, seed=seed)
    scores = [
        corpus_score([hypotheses[i] for i in idx], [[references[i] for i in idx]]).score
        for idx in resample_indices(len(hypotheses), 30, seed=seed)
    ]
    assert (result.ci_low, result.ci_high) == pytest.approx(percentile_interval(np.array(scores)), rel=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"tokenize": "char"},
        {"tokenize": "intl", "lowercase": True},
        {"smooth_method": "floor", "smooth_value": 0.2},
    ],
)
def test_bleu_options_reach_sacrebleu(options: dict) -> None:
    hypotheses, references = FIXTURES["unicode"]
    expected = BLEU(**options).corpus_score(hypotheses, [references]).score
    assert compute({"bleu": options}, hypotheses, references).value == expected


def test_bleu_details_keep_sacrebleus_signature() -> None:
    hypotheses, references = FIXTURES["sentences"]
    bleu = BLEU()
    bleu.corpus_score(hypotheses, [references])
    assert compute("bleu", hypotheses, references).details == {
        "sacrebleu_signature": bleu.get_signature().format()
    }


def test_chrf_plus_plus_equals_sacrebleu() -> None:
    hypotheses, references = FIXTURES["sentences"]
    expected = CHRF(word_order=2).corpus_score(hypotheses, [references]).score
    assert compute({"chrf": {"word_order": 2}}, hypotheses, references).value == expected


def _rouge(
    rouge_type: str, hypotheses: list[str], references: list[str], part: str, **kw: bool
) -> list[float]:
    scorer = rouge_scorer.RougeScorer([rouge_type], **kw)
    return [
        getattr(scorer.score(r, h)[rouge_type], part) for h, r in zip(hypotheses, references, strict=True)
    ]


@pytest.mark.parametrize("rouge_type", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_rouge_per_example_scores_equal_rouge_score(fixture: str, rouge_type: str) -> None:
    hypotheses, references = FIXTURES[fixture]
    expected = _rouge(rouge_type, hypotheses, references, "fmeasure")
    assert compute(rouge_type, hypotheses, references).per_example == expected


@pytest.mark.parametrize("rouge_type", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
def test_rouge_value_is_the_mean_f_measure(rouge_type: str) -> None:
    hypotheses, references = FIXTURES["sentences"]
    expected = float(np.mean(_rouge(rouge_type, hypotheses, references, "fmeasure")))
    assert compute(rouge_type, hypotheses, references).value == expected


def test_rouge_stemming_option_reaches_rouge_score() -> None:
    hypotheses, references = ["the cats were running"], ["the cat was run"]
    expected = _rouge("rouge1", hypotheses, references, "fmeasure", use_stemmer=True)
    result = compute({"rouge1": {"use_stemmer": True}}, hypotheses, references)
    assert result.per_example == expected and expected != _rouge("rouge1", hypotheses, references, "fmeasure")


def test_rouge_score_option_picks_recall() -> None:
    hypotheses, references = FIXTURES["sentences"]
    expected = _rouge("rougeL", hypotheses, references, "recall")
    assert compute({"rougeL": {"score": "recall"}}, hypotheses, references).per_example == expected


def test_rouge_lsum_splits_summaries_on_newlines() -> None:
    hypotheses, references = ["the cat sat\nthe dog ran"], ["the dog ran\nthe cat sat"]
    expected = _rouge("rougeLsum", hypotheses, references, "fmeasure")
    assert compute("rougeLsum", hypotheses, references).per_example == expected == [1.0]


def test_rouge_takes_the_best_of_several_references() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge2"])
    expected = scorer.score_multi(MULTI_REFERENCES[0], MULTI_HYPOTHESES[0])["rouge2"].fmeasure
    assert compute("rouge2", MULTI_HYPOTHESES, MULTI_REFERENCES).per_example[0] == expected


def test_rouge_details_hold_mean_precision_recall_and_f() -> None:
    hypotheses, references = FIXTURES["sentences"]
    details = compute("rouge1", hypotheses, references).details
    expected = {p: float(np.mean(_rouge("rouge1", hypotheses, references, p))) for p in details}
    assert details == expected and set(details) == {"precision", "recall", "fmeasure"}


@pytest.mark.parametrize("name", ["bleu", "chrf", "rouge1", "rougeLsum"])
def test_no_examples_give_nan_and_no_interval(name: str) -> None:
    result = compute(name, [], [])
    assert (math.isnan(result.value), result.ci_low, result.ci_high, result.n, result.per_example) == (
        True, None, None, 0, [],
    )  # fmt: skip


@pytest.mark.parametrize("name", ["bleu", "chrf", "rouge1"])
def test_one_example_has_a_degenerate_interval(name: str) -> None:
    result = compute(name, *FIXTURES["one_example"])
    assert result.ci_low == result.ci_high == pytest.approx(result.value, rel=1e-12)


def test_signature_records_options_and_sacrebleu_version() -> None:
    signature = compute({"bleu": {"tokenize": "char"}}, *FIXTURES["one_example"]).signature
    assert "|tokenize:char|" in signature and f"|sacrebleu:{sacrebleu.__version__}|" in signature
