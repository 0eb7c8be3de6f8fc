"""Exact match with normalisation options."""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any

from posteval.evaluators.base import EvalInputs, register_metric
from posteval.evaluators.common import Regex, decomposable_result, reference_strings, require_references
from posteval.results import MetricResult

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(
    text: str,
    *,
    strip: bool = True,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    collapse_whitespace: bool = False,
    regexes_to_ignore: tuple[str, ...] = (),
) -> str:
    """Apply exact-match normalisations in a fixed order: regexes, NFC, case, punctuation, spaces, strip."""
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    text = unicodedata.normalize("NFC", text)
    if ignore_case:
        text = text.casefold()
    if ignore_punctuation:
        text = text.translate(_PUNCT)
    if collapse_whitespace:
        text = " ".join(text.split())
    if strip:
        text = text.strip()
    return text


@register_metric("exact_match", higher_is_better=True)
def exact_match(
    inputs: EvalInputs,
    *,
    strip: bool = True,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    collapse_whitespace: bool = False,
    regexes_to_ignore: list[Regex] = [],  # noqa: B006 - pydantic copies defaults
) -> MetricResult:
    """Share of predictions equal to their reference (or to one of several) after the normalisations."""
    references = require_references(inputs, "exact_match")
    options: dict[str, Any] = {
        "strip": strip,
        "ignore_case": ignore_case,
        "ignore_punctuation": ignore_punctuation,
        "collapse_whitespace": collapse_whitespace,
        "regexes_to_ignore": tuple(regexes_to_ignore),
    }
    scores = [
        float(normalize_text(p, **options) in {normalize_text(r, **options) for r in reference_strings(refs)})
        for p, refs in zip(inputs.predictions, references, strict=True)
    ]
    return decomposable_result("exact_match", scores, inputs, higher_is_better=True, options=options)
