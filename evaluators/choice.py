"""Multiple choice by loglikelihood, as lm-evaluation-harness scores it.

Every choice is scored as a continuation of the prompt; ``accuracy`` picks the choice with the largest
summed log-probability (lm-evaluation-harness's ``acc``), ``accuracy_norm`` the largest log-probability
per UTF-8 byte of the choice (its ``acc_norm``), which does not favour short choices. Ties go to the
first choice, as numpy's argmax does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posteval.errors import MetricError
from posteval.evaluators.base import EvalInputs, register_metric
from posteval.evaluators.common import decomposable_result, require_references
from posteval.results import MetricResult

Scores = tuple[Sequence[Sequence[str]], Sequence[Sequence[float]]]


def _choice_scores(inputs: EvalInputs, metric: str) -> Scores:
    if inputs.choices is None or inputs.choice_logprobs is None:
        raise MetricError(
            f"metric {metric!r} needs multiple choice scores (a dataset with scoring: loglikelihood)"
        )
    return inputs.choices, inputs.choice_logprobs


def choice_accuracy(inputs: EvalInputs, metric: str, *, normalise: bool) -> MetricResult:
    """Share of examples whose best-scoring choice is the reference; per-example scores are 1 or 0."""
    choices, logprobs = _choice_scores(inputs, metric)
    references = [str(r) for r in require_references(inputs, metric)]
    scores = []
    for i, (options, values, gold) in enumerate(zip(choices, logprobs, references, strict=True)):
        weights = np.asarray(values, dtype=np.float64)
        if normalise:
            n_bytes = np.array([len(option.encode("utf-8")) for option in options], dtype=np.float64)
            if not n_bytes.all():
                raise MetricError(f"metric {metric!r}: example {i} has an empty choice (zero bytes)")
            weights = weights / n_bytes
        scores.append(float(options[int(np.argmax(weights))] == gold))
    details = {"normalisation": "bytes" if normalise else "none"}
    return decomposable_result(
        metric,
        scores,
        inputs,
        higher_is_better=True,
        options={"normalisation": details["normalisation"]},
        details=details,
    )


@register_metric("accuracy_norm", higher_is_better=True, needs_choices=True, accepts_choices=True)
def accuracy_norm(inputs: EvalInputs) -> MetricResult:
    """Multiple-choice accuracy with each choice's log-prob divided by its length in UTF-8 bytes."""
    return choice_accuracy(inputs, "accuracy_norm", normalise=True)
