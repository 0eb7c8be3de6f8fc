"""Code generation: pass@k (the unbiased estimator of Chen et al., 2021) and the plain pass rate, from the
sandbox's executions of every sample of every problem (``kind: code`` datasets).

Each problem's score is its own estimate, so the value is their mean, the CI a bootstrap over problems
and the paired comparison a test over problems, as for every mean-of-examples metric. Each problem's
outcomes (status, exception type, the failing test's line, the program's output) travel per example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from posteval.errors import MetricError
from posteval.evaluators.base import EvalInputs, register_metric
from posteval.evaluators.common import decomposable_result
from posteval.results import MetricResult


def pass_at_k_estimate(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with ``c`` of ``n`` samples passing: 1 - C(n-c, k) / C(n, k).

    Computed as Chen et al.'s numerically stable product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never
    forms the binomials (C(200, 100) overflows a float).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _executions(inputs: EvalInputs, metric: str) -> Sequence[Sequence[Mapping[str, Any]]]:
    if inputs.executions is None:
        raise MetricError(f"metric {metric!r} needs executed programs (a dataset with kind: code)")
    if len(inputs.executions) != len(inputs.predictions):
        raise MetricError(
            f"metric {metric!r}: {len(inputs.predictions)} problems but {len(inputs.executions)} executions"
        )
    return inputs.executions


def outcome_detail(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One problem's outcomes as stored with its scores: counts, and each sample's status and output."""
    statuses = [str(sample["status"]) for sample in samples]
    return {
        "n": len(samples),
        "passed": statuses.count("passed"),
        "samples": [
            {key: sample.get(key) for key in ("status", "error", "message", "output", "duration_s")}
            for sample in samples
        ],
    }


def _result(
    name: str,
    scores: list[float],
    inputs: EvalInputs,
    executions: Sequence[Sequence[Mapping[str, Any]]],
    options: dict[str, Any],
) -> MetricResult:
    counts: dict[str, int] = {}
    for samples in executions:
        for sample in samples:
            counts[str(sample["status"])] = counts.get(str(sample["status"]), 0) + 1
    result = decomposable_result(
        name, scores, inputs, higher_is_better=True, options=options, details={"outcomes": counts}
    )
    return dataclasses.replace(result, example_details=[outcome_detail(samples) for samples in executions])


def _k_name(options: Mapping[str, Any]) -> str:
    return f"pass@{options['k']}"


@register_metric(
    "pass_at_k", higher_is_better=True, needs_references=False, needs_execution=True, namer=_k_name
)
def pass_at_k(inputs: EvalInputs, *, k: Annotated[int, Field(gt=0)] = 1) -> MetricResult:
    """Mean over problems of the unbiased pass@k estimate from each problem's n samples (k <= n)."""
    executions = _executions(inputs, "pass_at_k")
    scores = []
    for samples in executions:
        n = len(samples)
        if k > n:
            raise MetricError(f"pass@{k} needs at least {k} samples per problem; a problem has {n}")
        scores.append(pass_at_k_estimate(n, sum(sample["status"] == "passed" for sample in samples), k))
    return _result(f"pass@{k}", scores, inputs, executions, {"k": k})


@register_metric("pass_rate", higher_is_better=True, needs_references=False, needs_execution=True)
def pass_rate(inputs: EvalInputs) -> MetricResult:
    """Share of all samples that pass their tests (each problem's share, averaged: problems weigh alike)."""
    executions = _executions(inputs, "pass_rate")
    scores = [
        sum(sample["status"] == "passed" for sample in samples) / len(samples) if samples else float("nan")
        for samples in executions
    ]
    return _result("pass_rate", scores, inputs, executions, {})
