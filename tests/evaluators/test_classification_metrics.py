"""Classification metrics equal scikit-learn called directly on the extracted labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from posteval.errors import MetricError
from posteval.evaluators import EvalInputs, resolve_metric
from posteval.evaluators.classification import INVALID, extract_label, label_set_stats, prf_from_label_sums
from posteval.evaluators.labels import labelled
from posteval.judging.stats import bootstrap_sums, percentile_interval, resample_indices

LABELS = ["positive", "negative", "neutral"]
# (generated text, reference, label the first_line rule extracts)
ROWS = [
    ("positive", "positive", "positive"),
    ("negative\nbecause it is bad", "negative", "negative"),
    ("  positive  ", "negative", "positive"),
    ("I think neutral", "neutral", INVALID),
    ("", "positive", INVALID),
    ("negative", "negative", "negative"),
    ("positive", "neutral", "positive"),
    ("Positive", "positive", INVALID),
]
PREDICTIONS, REFERENCES, EXTRACTED = (list(column) for column in zip(*ROWS, strict=True))
ORDER = [*LABELS, INVALID]
# "neutral" is never predicted; "ø" in the unicode label set occurs nowhere.
UNICODE_LABELS = ["ja", "nein", "ø", "日本", "ß"]
UNICODE_PREDICTIONS = ["日本", "ja", "ß", "ja", "ja"]
UNICODE_REFERENCES = ["日本", "nein", "ß", "ja", "日本"]
FIXTURES = {
    "with_invalid": (PREDICTIONS, REFERENCES, LABELS, EXTRACTED, ORDER),
    "unicode_absent_class": (
        UNICODE_PREDICTIONS, UNICODE_REFERENCES, UNICODE_LABELS, UNICODE_PREDICTIONS,
        ["ja", "nein", "日本", "ß"],
    ),
    "one_example": (["ja"], ["nein"], ["ja", "nein"], ["ja"], ["ja", "nein"]),
}  # fmt: skip


def compute(spec: str | dict, predictions: list[str], references: list[str], labels: list[str], **kw: int):
    return resolve_metric(spec).compute(EvalInputs(predictions, references, labels, **kw))


def test_first_line_rule_takes_the_stripped_first_non_empty_line() -> None:
    assert extract_label("\n  negative \nbecause", LABELS) == "negative"


def test_strip_rule_compares_the_whole_stripped_text() -> None:
    assert extract_label(" negative\nbecause", LABELS, rule="strip") == INVALID


def test_casefold_rule_ignores_case() -> None:
    assert extract_label("POSITIVE", LABELS, rule="casefold") == "positive"


def test_regex_rule_takes_the_first_group() -> None:
    assert extract_label("Answer: neutral.", LABELS, rule="regex", pattern=r"Answer: (\w+)") == "neutral"


def test_regex_rule_without_a_match_is_invalid() -> None:
    assert extract_label("no answer", LABELS, rule="regex", pattern=r"Answer: (\w+)") == INVALID


def test_empty_prediction_is_invalid() -> None:
    assert extract_label("", LABELS) == INVALID


def test_label_order_appends_invalid_when_a_prediction_is_invalid() -> None:
    assert labelled(EvalInputs(PREDICTIONS, REFERENCES, LABELS), "f1", "first_line", None).order == ORDER


def test_label_order_leaves_out_labels_that_occur_nowhere() -> None:
    data = labelled(
        EvalInputs(["neutral", "positive"], ["neutral", "neutral"], LABELS), "f1", "first_line", None
    )
    assert data.order == ["positive", "neutral"]


def test_reference_outside_the_label_set_is_refused() -> None:
    with pytest.raises(MetricError, match="the reference of example 1, 'maybe', is not in the label set"):
        compute("accuracy", ["positive", "positive"], ["positive", "maybe"], LABELS)


def test_missing_label_set_is_refused() -> None:
    with pytest.raises(MetricError, match="needs the dataset's 'labels'"):
        compute("accuracy", ["positive"], ["positive"], [])


@pytest.mark.parametrize("fixture", FIXTURES)
def test_accuracy_equals_scikit_learn(fixture: str) -> None:
    predictions, references, labels, extracted, _ = FIXTURES[fixture]
    result = compute("accuracy", predictions, references, labels)
    assert result.value == accuracy_score(references, extracted)


def test_accuracy_per_example_scores_are_hits_in_input_order() -> None:
    result = compute("accuracy", PREDICTIONS, REFERENCES, LABELS)
    assert result.per_example == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("measure", ["precision", "recall", "f1"])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_averaged_metric_equals_scikit_learn(fixture: str, measure: str, average: str) -> None:
    predictions, references, labels, extracted, _ = FIXTURES[fixture]
    result = compute({measure: {"average": average}}, predictions, references, labels)
    expected = precision_recall_fscore_support(
        references, extracted, labels=labels, average=average, zero_division=0
    )[["precision", "recall", "f1"].index(measure)]
    assert result.value == expected


@pytest.mark.parametrize("measure", ["precision", "recall", "f1"])
def test_zero_division_option_reaches_scikit_learn(measure: str) -> None:
    # "neutral" is never predicted: its precision divides by zero.
    result = compute({measure: {"zero_division": 1}}, PREDICTIONS, REFERENCES, LABELS)
    expected = precision_recall_fscore_support(
        REFERENCES, EXTRACTED, labels=LABELS, average="macro", zero_division=1
    )[["precision", "recall", "f1"].index(measure)]
    assert result.value == expected


def test_class_never_predicted_scores_zero_f1() -> None:
    table = compute("per_class", PREDICTIONS, REFERENCES, LABELS).details["per_class"]
    assert table["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_zero_division_changes_macro_precision() -> None:
    zero = compute("precision", PREDICTIONS, REFERENCES, LABELS).value
    one = compute({"precision": {"zero_division": 1}}, PREDICTIONS, REFERENCES, LABELS).value
    assert one > zero


def test_regex_extraction_feeds_the_metric() -> None:
    spec = {"accuracy": {"extract": "regex", "pattern": r"(?i)label:\s*(\w+)"}}
    result = compute(
        spec, ["Label: positive", "label:negative!", "none"], ["positive", "positive", "neutral"], LABELS
    )
    assert result.per_example == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_per_class_table_equals_scikit_learn(fixture: str) -> None:
    predictions, references, labels, extracted, _ = FIXTURES[fixture]
    result = compute("per_class", predictions, references, labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        references, extracted, labels=labels, average=None, zero_division=0
    )
    expected = {
        label: {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        for i, label in enumerate(labels)
    }
    assert result.details["per_class"] == expected


def test_per_class_table_averages_to_the_macro_f1_metric() -> None:
    table = compute("per_class", PREDICTIONS, REFERENCES, LABELS).details["per_class"]
    mean = sum(row["f1"] for row in table.values()) / len(table)
    assert mean == pytest.approx(compute("f1", PREDICTIONS, REFERENCES, LABELS).value, rel=1e-12)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_confusion_matrix_equals_scikit_learn(fixture: str) -> None:
    predictions, references, labels, extracted, order = FIXTURES[fixture]
    result = compute("confusion_matrix", predictions, references, labels)
    expected = confusion_matrix(references, extracted, labels=order).tolist()
    assert (result.details["labels"], result.details["matrix"]) == (order, expected)


def test_confusion_matrix_counts_invalid_predictions_in_their_own_column() -> None:
    matrix = compute("confusion_matrix", PREDICTIONS, REFERENCES, LABELS).details["matrix"]
    assert [row[3] for row in matrix] == [2, 0, 1, 0]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_classification_report_equals_scikit_learn(fixture: str) -> None:
    predictions, references, labels, extracted, _ = FIXTURES[fixture]
    result = compute("classification_report", predictions, references, labels)
    expected = classification_report(references, extracted, labels=labels, output_dict=True, zero_division=0)
    assert result.details["report"] == expected


def test_classification_report_macro_f1_is_the_f1_metric() -> None:
    report = compute("classification_report", PREDICTIONS, REFERENCES, LABELS).details["report"]
    assert report["macro avg"]["f1-score"] == compute("f1", PREDICTIONS, REFERENCES, LABELS).value


@pytest.mark.parametrize("name", ["f1", "per_class", "confusion_matrix", "classification_report"])
def test_details_are_plain_json(name: str) -> None:
    details = compute(name, PREDICTIONS, REFERENCES, LABELS).details
    assert json.loads(json.dumps(details)) == details


@pytest.mark.parametrize("name", ["accuracy", "f1", "per_class", "confusion_matrix", "classification_report"])
def test_no_examples_give_nan_and_no_interval(name: str) -> None:
    result = compute(name, [], [], LABELS)
    assert (math.isnan(result.value), result.ci_low, result.ci_high, result.n) == (True, None, None, 0)


@pytest.mark.parametrize("name", ["accuracy", "f1"])
def test_one_example_has_a_degenerate_interval(name: str) -> None:
    result = compute(name, ["ja"], ["ja"], ["ja"])
    assert (result.value, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("zero_division", [0, 1])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_resampled_scores_equal_scikit_learn_on_each_resample(average: str, zero_division: int) -> None:
    data = labelled(EvalInputs(PREDICTIONS, REFERENCES, LABELS), "f1", "first_line", None)
    sums = bootstrap_sums(
        label_set_stats(data.references, data.predicted, data.labels), n_resamples=25, seed=4
    )
    ours = np.stack(
        [
            prf_from_label_sums(sums, measure=measure, average=average, zero_division=zero_division)
            for measure in ("precision", "recall", "f1")
        ],
        axis=1,
    )
    references, predicted = np.array(REFERENCES), np.array(EXTRACTED)
    for row, idx in zip(ours, resample_indices(len(REFERENCES), 25, seed=4), strict=True):
        expected = precision_recall_fscore_support(
            references[idx], predicted[idx], labels=LABELS, average=average, zero_division=zero_division
        )[:3]
        assert row == pytest.approx(expected, rel=1e-12)


def test_macro_f1_interval_is_the_percentile_interval_of_resampled_scikit_learn_scores() -> None:
    result = compute("f1", PREDICTIONS, REFERENCES, LABELS, n_bootstrap=40, seed=7)
    references, predicted = np.array(REFERENCES), np.array(EXTRACTED)
    scores = [
        precision_recall_fscore_support(
            references[i], predicted[i], labels=LABELS, average="macro", zero_division=0
        )[2]
        for i in resample_indices(len(REFERENCES), 40, seed=7)
    ]
    assert (result.ci_low, result.ci_high) == pytest.approx(percentile_interval(np.array(scores)), rel=1e-12)


def test_signature_records_options_seed_and_library_version() -> None:
    signature = compute({"f1": {"average": "weighted"}}, PREDICTIONS, REFERENCES, LABELS, seed=3).signature
    assert "metric:f1|average:weighted|" in signature
    assert "|seed:3|" in signature and "|scikit-learn:" in signature


def _one_invalid_of_100() -> tuple[list[str], list[str]]:
    """The issue's reproduction: 100 examples over a/b/c, 99 right, one answer outside the label set."""
    references = ["a", "b", "c"] * 33 + ["a"]
    predictions = list(references)
    predictions[10] = "maybe"  # reference "b"
    return predictions, references


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
@pytest.mark.parametrize("measure", ["precision", "recall", "f1"])
def test_one_invalid_output_costs_one_example_not_a_class(measure: str, average: str) -> None:
    predictions, references = _one_invalid_of_100()
    result = compute({measure: {"average": average}}, predictions, references, ["a", "b", "c"])
    expected = precision_recall_fscore_support(
        references, predictions, labels=["a", "b", "c"], average=average, zero_division=0
    )[["precision", "recall", "f1"].index(measure)]
    assert result.value == expected
    if (measure, average) == ("f1", "macro"):
        assert round(result.value, 3) == 0.995  # 0.746 when <invalid> was averaged as a class


def test_an_invalid_output_is_a_false_negative_of_its_class_and_a_false_positive_of_none() -> None:
    predictions, references = _one_invalid_of_100()
    data = labelled(EvalInputs(predictions, references, ["a", "b", "c"]), "f1", "first_line", None)
    stats = label_set_stats(data.references, data.predicted, data.labels)
    tp, fp, fn = np.split(np.asarray(stats.sum(axis=0)), 3)
    assert (tp.tolist(), fp.tolist(), fn.tolist()) == ([34, 32, 33], [0, 0, 0], [0, 1, 0])


def test_invalid_rate_is_the_share_of_outputs_outside_the_label_set() -> None:
    result = compute("invalid_rate", PREDICTIONS, REFERENCES, LABELS)
    assert result.value == 3 / 8 and result.higher_is_better is False
    assert result.per_example == [float(label == INVALID) for label in EXTRACTED]
