"""Exact match and its normalisation options."""

from __future__ import annotations

import pytest

from posteval.evaluators import EvalInputs, resolve_metric


def scores(options: dict, predictions: list[str], references: list) -> list[float] | None:
    return resolve_metric({"exact_match": options}).compute(EvalInputs(predictions, references)).per_example


def test_exact_match_strips_by_default() -> None:
    assert scores({}, [" Paris\n", "paris"], ["Paris", "Paris"]) == [1.0, 0.0]


def test_ignore_case_folds_case() -> None:
    assert scores({"ignore_case": True}, ["STRASSE"], ["straße"]) == [1.0]


def test_ignore_punctuation_drops_ascii_punctuation() -> None:
    assert scores({"ignore_punctuation": True}, ["Paris!"], ["Paris."]) == [1.0]


def test_collapse_whitespace_joins_runs_of_spaces() -> None:
    assert scores({"collapse_whitespace": True}, ["New   York"], ["New York"]) == [1.0]


def test_regexes_to_ignore_are_removed_first() -> None:
    assert scores({"regexes_to_ignore": [r"^Answer:\s*"]}, ["Answer: 42"], ["42"]) == [1.0]


def test_unicode_is_compared_in_nfc() -> None:
    assert scores({}, ["cafe\u0301"], ["café"]) == [1.0]


def test_empty_prediction_matches_only_an_empty_reference() -> None:
    assert scores({}, ["", ""], ["", "x"]) == [1.0, 0.0]


def test_any_of_several_references_matches() -> None:
    assert scores({}, ["NYC", "LA"], [["New York", "NYC"], ["SF"]]) == [1.0, 0.0]


def test_value_is_the_share_of_matches_with_an_interval() -> None:
    result = resolve_metric("exact_match").compute(EvalInputs(["a", "b", "c", "d"], ["a", "b", "c", "x"]))
    assert result.value == 0.75 and result.ci_low is not None and result.ci_low <= 0.75 <= result.ci_high


@pytest.mark.parametrize("strip", [True, False])
def test_strip_option_is_recorded_in_the_signature(strip: bool) -> None:
    result = resolve_metric({"exact_match": {"strip": strip}}).compute(EvalInputs(["a"], ["a"]))
    assert f"|strip:{strip}|" in result.signature
