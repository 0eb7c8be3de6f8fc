"""Structured-output metrics: JSON validity, JSON-schema conformance, field accuracy, regex match.

JSON is read from a prediction as the whole stripped text or, failing that, the first fenced block opened
with ```json or a bare ``` (models often wrap JSON that way). Parsing is strict JSON: ``NaN`` and
``Infinity`` are refused. Every metric here is a rate, the mean of 1/0 (or fractional) per-example scores,
with a bootstrap CI of the mean.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

import jsonschema

from posteval.errors import MetricError
from posteval.evaluators.base import EvalInputs, register_metric
from posteval.evaluators.common import JsonSchema, Regex, decomposable_result, require_references
from posteval.results import MetricResult

_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_NOT_JSON = object()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return _NOT_JSON


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, value) when ``text`` holds JSON (whole, or in a fenced block), else (False, None)."""
    value = _loads(text.strip())
    if value is _NOT_JSON and (fence := _FENCE.search(text)) is not None:
        value = _loads(fence.group(1).strip())
    return (False, None) if value is _NOT_JSON else (True, value)


@register_metric("json_valid", higher_is_better=True, needs_references=False)
def json_valid(inputs: EvalInputs) -> MetricResult:
    """Share of predictions that hold valid JSON."""
    scores = [float(parse_json(p)[0]) for p in inputs.predictions]
    return decomposable_result("json_valid", scores, inputs, higher_is_better=True, options={})


def check_schema_source(options: Mapping[str, Any]) -> None:
    """Exactly one of ``schema`` (one schema for the suite) and ``schema_field`` (a schema per row)."""
    if (options.get("schema") is None) == (options.get("schema_field") is None):
        raise ValueError("set exactly one of option 'schema' and option 'schema_field'")


@lru_cache(maxsize=256)
def _validator(canonical_schema: str, check_formats: bool) -> jsonschema.protocols.Validator:
    schema = json.loads(canonical_schema)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER if check_formats else None)


def _row_schema(inputs: EvalInputs, i: int, field: str) -> Any:
    if inputs.rows is None or len(inputs.rows) != len(inputs.predictions):
        raise MetricError(f"metric 'json_schema': option schema_field {field!r} needs the dataset rows")
    if field not in inputs.rows[i]:
        raise MetricError(f"metric 'json_schema': example {i} has no field {field!r} (option schema_field)")
    schema = inputs.rows[i][field]
    if isinstance(schema, str):
        ok, schema = parse_json(schema)
        if not ok:
            raise MetricError(f"metric 'json_schema': field {field!r} of example {i} is not JSON")
    return schema


def _conforms(prediction: str, schema: Any, check_formats: bool, where: str) -> float:
    try:
        validator = _validator(json.dumps(schema, sort_keys=True), check_formats)
    except jsonschema.SchemaError as exc:
        raise MetricError(f"metric 'json_schema': {where} is not a valid JSON schema: {exc.message}") from exc
    ok, instance = parse_json(prediction)
    return float(ok and validator.is_valid(instance))


@register_metric("json_schema", higher_is_better=True, needs_references=False, check=check_schema_source)
def json_schema(
    inputs: EvalInputs,
    *,
    schema: JsonSchema | None = None,
    schema_field: str | None = None,
    check_formats: bool = False,
) -> MetricResult:
    """Share of predictions whose JSON conforms to the suite's ``schema`` or each row's ``schema_field``.

    Invalid JSON does not conform. ``check_formats`` also enforces ``format`` (dates, e-mails ...).
    """
    scores = []
    for i, prediction in enumerate(inputs.predictions):
        if schema_field is not None:
            row_schema, where = _row_schema(inputs, i, schema_field), f"field {schema_field!r} of example {i}"
        else:
            row_schema, where = schema, "option schema"
        scores.append(_conforms(prediction, row_schema, check_formats, where))
    options = {"schema": schema, "schema_field": schema_field, "check_formats": check_formats}
    return decomposable_result(
        "json_schema", scores, inputs, higher_is_better=True, options=options, libraries=["jsonschema"]
    )


def same_json(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value, but true/false never equal 1/0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _reference_object(reference: Any, i: int) -> dict[str, Any]:
    if isinstance(reference, str):
        ok, reference = parse_json(reference)
        if not ok:
            raise MetricError(f"metric 'json_field_accuracy': the reference of example {i} is not JSON")
    if not isinstance(reference, dict):
        raise MetricError(f"metric 'json_field_accuracy': the reference of example {i} is not a JSON object")
    return reference


@register_metric("json_field_accuracy", higher_is_better=True)
def json_field_accuracy(inputs: EvalInputs, *, fields: list[str] | None = None) -> MetricResult:
    """Mean over examples of the share of the reference object's top-level fields the prediction matches.

    ``fields`` restricts the comparison; a field matches when both objects lack it or hold equal JSON values.
    A prediction that is not a JSON object scores 0; a reference with no fields to compare scores 1.
    """
    references = require_references(inputs, "json_field_accuracy")
    missing = object()
    scores: list[float] = []
    per_field: dict[str, list[float]] = {}
    for i, (prediction, reference) in enumerate(zip(inputs.predictions, references, strict=True)):
        expected = _reference_object(reference, i)
        ok, predicted = parse_json(prediction)
        keys = list(expected) if fields is None else fields
        hits = [
            isinstance(predicted, dict) and same_json(expected.get(k, missing), predicted.get(k, missing))
            for k in keys
        ]
        for key, hit in zip(keys, hits, strict=True):
            per_field.setdefault(key, []).append(float(hit))
        scores.append(sum(hits) / len(hits) if hits else float(ok and isinstance(predicted, dict)))
    details = {"per_field": {key: sum(v) / len(v) for key, v in per_field.items()}}
    return decomposable_result(
        "json_field_accuracy",
        scores,
        inputs,
        higher_is_better=True,
        options={"fields": fields},
        details=details,
    )


@register_metric("regex_match", higher_is_better=True, needs_references=False)
def regex_match(
    inputs: EvalInputs,
    *,
    pattern: Regex,
    mode: Literal["fullmatch", "search"] = "fullmatch",
    ignore_case: bool = False,
    strip: bool = True,
) -> MetricResult:
    """Share of predictions the regex ``pattern`` matches: whole (``fullmatch``) or anywhere (``search``)."""
    compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    match = compiled.fullmatch if mode == "fullmatch" else compiled.search
    scores = [float(match(p.strip() if strip else p) is not None) for p in inputs.predictions]
    options = {"pattern": pattern, "mode": mode, "ignore_case": ignore_case, "strip": strip}
    return decomposable_result("regex_match", scores, inputs, higher_is_better=True, options=options)
