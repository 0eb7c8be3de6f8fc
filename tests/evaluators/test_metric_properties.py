"""Invariants every metric keeps, checked on generated inputs: bounds, perfect scores, order independence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posteval.evaluators import EvalInputs, resolve_metric

LABELS = ["yes", "no", "maybe"]
WORDS = ["the", "cat", "sat", "on", "a", "mat", "über", "naïve", "東京", "run", "ran", "!", "42"]
FAST = settings(max_examples=25, deadline=None)

labels = st.sampled_from([*LABELS, "junk", ""])
sentences = st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join)
long_sentences = st.lists(st.sampled_from(WORDS), min_size=4, max_size=12).map(" ".join)


@st.composite
def label_pairs(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    references = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=30))
    predictions = draw(st.lists(labels, min_size=len(references), max_size=len(references)))
    return predictions, references


@st.composite
def text_pairs(draw: st.DrawFn, texts: st.SearchStrategy[str] = sentences) -> tuple[list[str], list[str]]:
    references = draw(st.lists(texts, min_size=1, max_size=15))
    predictions = draw(st.lists(texts, min_size=len(references), max_size=len(references)))
    return predictions, references


def compute(spec: str | dict, predictions: list[str], references: list[str], **kw: object):
    return resolve_metric(spec).compute(EvalInputs(predictions, references, n_bootstrap=100, **kw))


def _within(result, low: float, high: float) -> bool:
    return all(low <= v <= high for v in (result.value, result.ci_low, result.ci_high)) and (
        result.ci_low <= result.ci_high
    )


CLASSIFICATION = [
    "accuracy",
    "precision",
    "recall",
    "f1",
    {"f1": {"average": "weighted"}},
    {"f1": {"average": "micro"}},
]
TEXT_0_100 = ["bleu", "chrf"]
TEXT_0_1 = ["rouge1", "rouge2", "rougeL", "exact_match"]


@pytest.mark.parametrize("spec", CLASSIFICATION)
@FAST
@given(pair=label_pairs())
def test_classification_scores_and_intervals_lie_in_zero_one(spec: str | dict, pair: tuple) -> None:
    assert _within(compute(spec, *pair, labels=LABELS), 0.0, 1.0)


@pytest.mark.parametrize("spec", CLASSIFICATION)
@FAST
@given(drawn=st.lists(st.sampled_from(LABELS), max_size=30))
def test_identical_labels_covering_the_label_set_score_one(spec: str | dict, drawn: list[str]) -> None:
    # Averages run over the whole label set (scikit-learn's labels=), so every label must occur.
    references = [*LABELS, *drawn]
    assert compute(spec, references, references, labels=LABELS).value == 1.0


@pytest.mark.parametrize("spec", ["f1", {"precision": {"average": "weighted"}}, "recall"])
@FAST
@given(pair=label_pairs(), data=st.data())
def test_averaged_classification_does_not_depend_on_example_order(
    spec: str | dict, pair: tuple, data
) -> None:
    order = data.draw(st.permutations(range(len(pair[0]))))
    shuffled = [[column[i] for i in order] for column in pair]
    assert compute(spec, *shuffled, labels=LABELS).value == compute(spec, *pair, labels=LABELS).value


@pytest.mark.parametrize("name", TEXT_0_100)
@FAST
@given(pair=text_pairs())
def test_bleu_and_chrf_lie_in_zero_hundred(name: str, pair: tuple) -> None:
    assert _within(compute(name, *pair), 0.0, 100.0 + 1e-9)


@pytest.mark.parametrize("name", TEXT_0_1)
@FAST
@given(pair=text_pairs())
def test_rouge_and_exact_match_lie_in_zero_one(name: str, pair: tuple) -> None:
    assert _within(compute(name, *pair), 0.0, 1.0 + 1e-12)


@pytest.mark.parametrize("name", TEXT_0_100)
@FAST
@given(references=st.lists(long_sentences, min_size=1, max_size=10))
def test_identical_texts_score_a_hundred(name: str, references: list[str]) -> None:
    assert compute(name, references, references).value == pytest.approx(100.0)


@pytest.mark.parametrize("name", ["rouge1", "rougeL", "exact_match"])
@FAST
@given(
    references=st.lists(
        long_sentences.filter(lambda s: any(w.isascii() and w.isalnum() for w in s.split())),
        min_size=1,
        max_size=10,
    )
)
def test_identical_texts_score_one(name: str, references: list[str]) -> None:
    assert compute(name, references, references).value == pytest.approx(1.0)


@pytest.mark.parametrize("name", TEXT_0_100)
@FAST
@given(pair=text_pairs(), data=st.data())
def test_corpus_text_metrics_do_not_depend_on_example_order(name: str, pair: tuple, data) -> None:
    order = data.draw(st.permutations(range(len(pair[0]))))
    shuffled = [[column[i] for i in order] for column in pair]
    assert compute(name, *shuffled).value == compute(name, *pair).value


@FAST
@given(pair=text_pairs(), seed=st.integers(0, 2**32 - 1))
def test_interval_is_reproducible_for_a_seed(pair: tuple, seed: int) -> None:
    first, second = compute("bleu", *pair, seed=seed), compute("bleu", *pair, seed=seed)
    assert (first.ci_low, first.ci_high) == (second.ci_low, second.ci_high)
