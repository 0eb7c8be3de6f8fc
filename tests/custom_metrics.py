"""A user's own metric, registered as the README describes and named in a suite by its import path."""

from __future__ import annotations

from posteval.evaluators import EvalInputs, register_metric
from posteval.evaluators.common import decomposable_result, require_references
from posteval.results import MetricResult


@register_metric("label_mentioned", higher_is_better=True)
def label_mentioned(inputs: EvalInputs) -> MetricResult:
    """1 where the output mentions the reference label anywhere (case-insensitive), else 0."""
    references = require_references(inputs, "label_mentioned")
    scores = [
        float(str(ref).casefold() in str(out).casefold())
        for out, ref in zip(inputs.predictions, references, strict=True)
    ]
    return decomposable_result("label_mentioned", scores, inputs, higher_is_better=True, options={})
