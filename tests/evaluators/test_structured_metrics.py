"""Structured-output metrics: JSON validity, schema conformance (against jsonschema), fields, regex."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from posteval.errors import MetricError
from posteval.evaluators import EvalInputs, resolve_metric
from posteval.evaluators.structured import parse_json, same_json

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
}
PREDICTIONS = [
    '{"name": "Ada", "age": 36}',
    '```json\n{"name": "Ελένη"}\n```',
    '{"name": "Bob", "age": -1}',
    '{"age": 3}',
    "not json",
    "",
    '{"name": "Eve", "age": NaN}',
    '[1, 2, 3]',
]  # fmt: skip


def compute(spec: str | dict, predictions: list[str], references: list | None = None, **kw):
    return resolve_metric(spec).compute(EvalInputs(predictions, references, **kw))


def _conforms(instance: object, schema: dict) -> float:
    try:
        jsonschema.validate(instance, schema)
    except jsonschema.ValidationError:
        return 0.0
    return 1.0


def test_parse_json_reads_the_stripped_text() -> None:
    assert parse_json('  {"a": 1}\n') == (True, {"a": 1})


def test_parse_json_reads_a_json_fenced_block() -> None:
    assert parse_json('Here you go:\n```json\n{"a": [1, "ü"]}\n```\nDone.') == (True, {"a": [1, "ü"]})


def test_parse_json_reads_a_bare_fenced_block() -> None:
    assert parse_json("```\n[true, null]\n```") == (True, [True, None])


def test_parse_json_refuses_nan() -> None:
    assert parse_json('{"x": NaN}') == (False, None)


def test_parse_json_refuses_an_empty_prediction() -> None:
    assert parse_json("") == (False, None)


def test_json_valid_scores_each_prediction() -> None:
    result = compute("json_valid", PREDICTIONS)
    assert result.per_example == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_json_valid_value_is_the_valid_share() -> None:
    assert compute("json_valid", PREDICTIONS).value == 5 / 8


def test_json_schema_equals_jsonschema_validate() -> None:
    parsed = [parse_json(p) for p in PREDICTIONS]
    expected = [_conforms(value, SCHEMA) if ok else 0.0 for ok, value in parsed]
    result = compute({"json_schema": {"schema": SCHEMA}}, PREDICTIONS)
    assert result.per_example == expected == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_json_schema_reads_a_schema_per_row() -> None:
    rows = [{"s": {"type": "array"}}, {"s": json.dumps({"type": "object"})}, {"s": {"type": "string"}}]
    result = compute({"json_schema": {"schema_field": "s"}}, ["[1]", "[1]", '"x"'], rows=rows)
    assert result.per_example == [1.0, 0.0, 1.0]


def test_json_schema_refuses_an_invalid_row_schema_naming_the_example() -> None:
    rows = [{"s": {"type": "object"}}, {"s": {"type": 12}}]
    with pytest.raises(MetricError, match="field 's' of example 1 is not a valid JSON schema"):
        compute({"json_schema": {"schema_field": "s"}}, ["{}", "{}"], rows=rows)


def test_json_schema_refuses_a_row_without_the_schema_field() -> None:
    with pytest.raises(MetricError, match="example 0 has no field 's'"):
        compute({"json_schema": {"schema_field": "s"}}, ["{}"], rows=[{"t": {}}])


def test_json_schema_checks_formats_on_request() -> None:
    schema = {"type": "string", "format": "email"}
    loose = compute({"json_schema": {"schema": schema}}, ['"not-an-email"'])
    strict = compute({"json_schema": {"schema": schema, "check_formats": True}}, ['"not-an-email"'])
    assert (loose.value, strict.value) == (1.0, 0.0)


def test_same_json_tells_booleans_from_numbers() -> None:
    assert (same_json(True, 1), same_json(1, 1.0), same_json({"a": [0]}, {"a": [False]})) == (
        False,
        True,
        False,
    )


def test_json_field_accuracy_scores_the_share_of_matching_fields() -> None:
    references = [{"a": 1, "b": "x"}, {"a": 1, "b": "x"}, '{"a": true}', {"a": 1}]
    predictions = ['{"a": 1, "b": "x"}', '{"a": 1.0, "b": "y", "c": 0}', '{"a": 1}', "oops"]
    result = compute("json_field_accuracy", predictions, references)
    assert result.per_example == [1.0, 0.5, 0.0, 0.0]


def test_json_field_accuracy_details_hold_per_field_accuracy() -> None:
    references = [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    result = compute("json_field_accuracy", ['{"a": 1, "b": "x"}', '{"a": 1, "b": "x"}'], references)
    assert result.details == {"per_field": {"a": 0.5, "b": 1.0}}


def test_json_field_accuracy_fields_option_restricts_the_comparison() -> None:
    result = compute({"json_field_accuracy": {"fields": ["b"]}}, ['{"a": 9, "b": "x"}'], [{"a": 1, "b": "x"}])
    assert result.value == 1.0


def test_json_field_accuracy_refuses_a_reference_that_is_not_an_object() -> None:
    with pytest.raises(MetricError, match="the reference of example 0 is not a JSON object"):
        compute("json_field_accuracy", ["{}"], [[1, 2]])


def test_regex_fullmatch_needs_the_whole_stripped_prediction() -> None:
    result = compute({"regex_match": {"pattern": r"\d{3}"}}, ["123", " 456\n", "1234", "x123"])
    assert result.per_example == [1.0, 1.0, 0.0, 0.0]


def test_regex_search_finds_the_pattern_anywhere() -> None:
    result = compute({"regex_match": {"pattern": r"\d{3}", "mode": "search"}}, ["123", "x1234", "12"])
    assert result.per_example == [1.0, 1.0, 0.0]


def test_regex_ignore_case_option() -> None:
    result = compute({"regex_match": {"pattern": "yes", "ignore_case": True}}, ["YES", "no"])
    assert result.per_example == [1.0, 0.0]


@pytest.mark.parametrize(
    "spec", ["json_valid", {"json_schema": {"schema": SCHEMA}}, {"regex_match": {"pattern": "a"}}]
)
def test_no_examples_give_nan_and_no_interval(spec: str | dict) -> None:
    result = compute(spec, [])
    assert (math.isnan(result.value), result.ci_low, result.ci_high, result.n) == (True, None, None, 0)


def test_json_schema_signature_digests_the_schema() -> None:
    signature = compute({"json_schema": {"schema": SCHEMA}}, ["{}"]).signature
    assert "|schema:sha256:" in signature and "|jsonschema:" in signature
