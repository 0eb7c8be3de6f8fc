"""General-quality metrics from loglikelihoods: token-level perplexity and bits per byte.

Both are corpus-level: total negative log-likelihood over total tokens (or bytes), so long texts weigh in
proportion to their length, as in lm-evaluation-harness. The per-example scores are each text's own
perplexity (or bits per byte), kept for paired comparisons. Empty input: value NaN, no CI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from posteval.errors import MetricError
from posteval.evaluators.base import EvalInputs, register_aggregator, register_metric
from posteval.evaluators.common import corpus_result
from posteval.results import MetricResult


def _loglikelihoods(inputs: EvalInputs, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if inputs.logprob_sums is None or inputs.token_counts is None or inputs.byte_counts is None:
        raise MetricError(
            f"metric {metric!r} needs loglikelihoods: use it on a dataset with kind: perplexity"
        )
    return (
        np.asarray(inputs.logprob_sums, dtype=np.float64),
        np.asarray(inputs.token_counts, dtype=np.float64),
        np.asarray(inputs.byte_counts, dtype=np.float64),
    )


def _ratio(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominators > 0, numerators / np.where(denominators > 0, denominators, 1), np.nan)


@register_aggregator("nll_ratio")
def nll_ratio(sums: np.ndarray, *, transform: str) -> np.ndarray:
    """Summed (negative log-likelihood, units) to the metric: ``exp`` (perplexity), ``bits`` (per byte) or
    ``mean`` (nats per token)."""
    mean = _ratio(sums[:, 0], sums[:, 1])
    if transform == "exp":
        return np.asarray(np.exp(mean))
    return mean * (1.0 / math.log(2) if transform == "bits" else 1.0)


def _result(
    name: str, nll: np.ndarray, units: np.ndarray, inputs: EvalInputs, transform: str
) -> MetricResult:
    def score(sums: np.ndarray) -> np.ndarray:
        return nll_ratio(sums, transform=transform)

    stats = np.column_stack([nll, units]) if len(nll) else np.empty((0, 2))
    value = float(score(stats.sum(axis=0, keepdims=True))[0]) if len(nll) else float("nan")
    per_example: Sequence[float] = score(stats).tolist() if len(nll) else []
    return corpus_result(
        name,
        value,
        inputs,
        stats=stats,
        aggregation={"fn": "nll_ratio", "transform": transform},
        higher_is_better=False,
        options={},
        libraries=["torch", "transformers"],
        per_example=per_example,
        details={"total_nll": float(nll.sum()), "total_units": float(units.sum())},
    )


@register_metric(
    "perplexity",
    higher_is_better=False,
    category="general",
    needs_references=False,
    needs_loglikelihoods=True,
)
def perplexity(inputs: EvalInputs) -> MetricResult:
    """exp(total negative log-likelihood / total tokens) over the dataset's texts."""
    logprobs, tokens, _ = _loglikelihoods(inputs, "perplexity")
    return _result("perplexity", -logprobs, tokens, inputs, "exp")


@register_metric(
    "bits_per_byte",
    higher_is_better=False,
    category="general",
    needs_references=False,
    needs_loglikelihoods=True,
)
def bits_per_byte(inputs: EvalInputs) -> MetricResult:
    """Total negative log-likelihood in bits over total UTF-8 bytes: comparable across tokenizers."""
    logprobs, _, n_bytes = _loglikelihoods(inputs, "bits_per_byte")
    return _result("bits_per_byte", -logprobs, n_bytes, inputs, "bits")


@register_metric(
    "token_loss",
    higher_is_better=False,
    category="overfitting",
    needs_references=False,
    needs_loglikelihoods=True,
)
def token_loss(inputs: EvalInputs) -> MetricResult:
    """Mean negative log-likelihood per token (nats): the training loss, measured on held texts."""
    logprobs, tokens, _ = _loglikelihoods(inputs, "token_loss")
    return _result("token_loss", -logprobs, tokens, inputs, "mean")
