"""The registry: metric names and options are checked when the suite loads."""

from __future__ import annotations

import json

import pytest

from posteval.errors import MetricError
from posteval.evaluators import EvalInputs, get_metric, known_metrics, resolve_metric

BUILTIN = {
    "accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix", "classification_report",
    "bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match",
    "json_valid", "json_schema", "json_field_accuracy", "regex_match", "pass_at_k", "pass_rate",
}  # fmt: skip


def test_every_builtin_metric_is_registered() -> None:
    assert set(known_metrics()) >= BUILTIN


def test_unknown_metric_names_the_closest_match_and_lists_known_ones() -> None:
    with pytest.raises(MetricError, match=r"unknown metric 'acuracy'\. Did you mean 'accuracy'\?") as err:
        resolve_metric("acuracy")
    assert f"Known metrics: {', '.join(known_metrics())}" in str(err.value)


def test_stored_name_points_back_to_its_metric() -> None:
    with pytest.raises(MetricError, match="Did you mean 'f1'"):
        resolve_metric("f1_macro")


def test_unknown_option_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(MetricError, match=r"option 'bogus': Extra inputs.*allowed options: tokenize"):
        resolve_metric({"bleu": {"bogus": 1}})


def test_option_outside_its_choices_is_refused() -> None:
    with pytest.raises(MetricError, match="option 'average': Input should be 'macro', 'micro' or 'weighted'"):
        resolve_metric({"f1": {"average": "samples"}})


def test_invalid_json_schema_is_refused_naming_the_option() -> None:
    with pytest.raises(MetricError, match="option 'schema': not a valid JSON schema at type: 'nope'"):
        resolve_metric({"json_schema": {"schema": {"type": "nope"}}})


def test_regex_that_does_not_compile_is_refused() -> None:
    with pytest.raises(MetricError, match="option 'pattern': regex '\\(ab' does not compile"):
        resolve_metric({"regex_match": {"pattern": "(ab"}})


def test_label_pattern_that_does_not_compile_is_refused() -> None:
    with pytest.raises(MetricError, match="option 'pattern': regex"):
        resolve_metric({"f1": {"extract": "regex", "pattern": "[a-"}})


def test_ignored_regex_that_does_not_compile_is_refused() -> None:
    with pytest.raises(MetricError, match=r"option 'regexes_to_ignore\.1': regex '\[' does not compile"):
        resolve_metric({"exact_match": {"regexes_to_ignore": ["a", "["]}})


def test_regex_extraction_needs_a_pattern() -> None:
    with pytest.raises(MetricError, match="option 'extract' is 'regex' but option 'pattern' is not set"):
        resolve_metric({"accuracy": {"extract": "regex"}})


def test_pattern_without_regex_extraction_is_refused() -> None:
    with pytest.raises(MetricError, match="option 'pattern' is only used with extract: regex"):
        resolve_metric({"accuracy": {"pattern": "(yes|no)"}})


def test_json_schema_needs_exactly_one_schema_source() -> None:
    with pytest.raises(MetricError, match="set exactly one of option 'schema' and option 'schema_field'"):
        resolve_metric("json_schema")


def test_required_option_is_named() -> None:
    with pytest.raises(MetricError, match="option 'pattern': Field required"):
        resolve_metric("regex_match")


def test_name_is_suffixed_with_non_default_word_options() -> None:
    assert resolve_metric({"f1": {"average": "weighted"}}).name == "f1_weighted"


def test_name_keeps_no_suffix_for_default_options() -> None:
    assert resolve_metric({"f1": {"average": "macro"}}).name == "f1"


def test_name_spells_numeric_options_with_their_key() -> None:
    assert resolve_metric({"chrf": {"word_order": 2}}).name == "chrf_word_order-2"


def test_name_spells_flags_as_the_option() -> None:
    assert resolve_metric({"rouge1": {"use_stemmer": True}}).name == "rouge1_use_stemmer"


def test_name_digests_a_schema() -> None:
    name = resolve_metric({"json_schema": {"schema": {"type": "object"}}}).name
    assert name.startswith("json_schema_schema-") and len(name) == len("json_schema_schema-") + 8


def test_schema_option_reaches_the_metric_under_its_own_name() -> None:
    bound = resolve_metric({"json_schema": {"schema": {"type": "object"}}})
    assert bound.options == {"schema": {"type": "object"}}


def test_metric_info_records_what_the_metric_needs() -> None:
    info = get_metric("accuracy")
    assert (info.higher_is_better, info.needs_references, info.needs_labels) == (True, True, True)


def test_json_valid_needs_no_references() -> None:
    assert get_metric("json_valid").needs_references is False


def test_computing_without_references_is_refused() -> None:
    with pytest.raises(MetricError, match="needs references"):
        resolve_metric("bleu").compute(EvalInputs(predictions=["a"]))


def test_computed_result_carries_the_bound_name() -> None:
    result = resolve_metric({"f1": {"average": "micro"}}).compute(
        EvalInputs(predictions=["a"], references=["a"], labels=["a", "b"])
    )
    assert result.name == "f1_micro"


_LABELLED = EvalInputs(["yes", "no", "maybe?"], ["yes", "yes", "no"], ["yes", "no"], n_bootstrap=50)
_TEXT = EvalInputs(["a cat sat", '{"a": 1}', ""], ["the cat sat", '{"a": 2}', "x"], n_bootstrap=50)
_CODE = EvalInputs(
    ["", "", ""],
    executions=[
        [{"status": "passed"}],
        [{"status": "failed", "error": "AssertionError"}],
        [{"status": "timeout"}],
    ],
    n_bootstrap=50,
)
SAMPLE_INPUTS = {
    **{name: _LABELLED for name in ("accuracy", "precision", "recall", "f1", "invalid_rate")},
    **{name: _TEXT for name in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "exact_match")},
    "json_valid": _TEXT,
    "json_field_accuracy": EvalInputs(
        ['{"a": 1}', '{"a": 2, "b": 1}', "x"], [{"a": 1}, {"a": 1, "b": 1}, {"a": 1}]
    ),
    "json_schema": _TEXT,
    "regex_match": _TEXT,
    **{name: _CODE for name in ("pass_at_k", "pass_rate")},
}
SAMPLE_OPTIONS = {"json_schema": {"schema": {"type": "object"}}, "regex_match": {"pattern": "a.*"}}
REPORTS = ("confusion_matrix", "per_class", "classification_report")


@pytest.mark.parametrize("name", REPORTS)
def test_reports_are_registered_as_reports_with_plain_json_details(name: str) -> None:
    assert get_metric(name).is_report
    result = resolve_metric(name).compute(_LABELLED)
    assert json.loads(json.dumps(result.details, allow_nan=False)) == result.details
    assert result.details["invalid"] == 1


def test_no_metric_but_the_reports_is_a_report() -> None:
    assert sorted(name for name in known_metrics() if get_metric(name).is_report) == sorted(REPORTS)


@pytest.mark.parametrize("name", sorted(SAMPLE_INPUTS))
def test_every_builtin_result_is_plain_json_with_an_interval(name: str) -> None:
    result = resolve_metric({name: SAMPLE_OPTIONS.get(name)}).compute(SAMPLE_INPUTS[name])
    row = dict(result.__dict__)
    assert json.loads(json.dumps(row, allow_nan=False)) == row
    assert result.ci_low is not None and result.ci_low <= result.ci_high and result.n == 3
