"""Classification metrics over a label set, computed with scikit-learn.

Labels come from generated text by the ``extract`` rule. Every metric works over the labels that occur
(see :mod:`evaluators.labels`), so an invalid answer is its own ``<invalid>`` class in the averages, the
confusion matrix and the report. Accuracy's CI is a bootstrap of the mean; the averaged metrics' CIs
recompute the average on every resample from resampled per-class true / predicted / true-positive counts,
exactly as scikit-learn would on the resampled examples (labels absent from a resample leave its macro
average, and zero divisions score ``zero_division``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from evaluators.base import EvalInputs, register_metric
from evaluators.choice import choice_accuracy
from evaluators.common import Regex, corpus_result, decomposable_result
from evaluators.labels import INVALID, Extraction, Labelled, check_extraction, extract_label, labelled
from posteval.results import MetricResult

__all__ = ["INVALID", "Extraction", "extract_label"]

Average = Literal["macro", "micro", "weighted"]
ZeroDivision = Literal[0, 1]
_LIBRARIES = ["scikit-learn"]
_PRF_INDEX = {"precision": 0, "recall": 1, "f1": 2}


def prf_stats(data: Labelled) -> scipy.sparse.csr_array:
    """Per-example sufficient statistics: one-hot true label, predicted label and true positive, (n, 3C)."""
    index = {label: i for i, label in enumerate(data.order)}
    n, c = len(data.references), len(data.order)
    true = np.array([index[r] for r in data.references], dtype=np.int64)
    pred = np.array([index[p] for p in data.predicted], dtype=np.int64)
    hit = np.flatnonzero(true == pred)
    rows = np.concatenate([np.arange(n), np.arange(n), hit])
    cols = np.concatenate([true, c + pred, 2 * c + true[hit]])
    return scipy.sparse.csr_array((np.ones(len(rows)), (rows, cols)), shape=(n, 3 * c))


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def prf_from_sums(
    sums: np.ndarray, *, average: Average, zero_division: ZeroDivision = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Averaged precision, recall and F1 per row of summed :func:`prf_stats`, as scikit-learn does."""
    true, pred, tp = np.split(sums, 3, axis=1)
    if average == "micro":
        true, pred, tp = (a.sum(axis=1, keepdims=True) for a in (true, pred, tp))
    precision = _divide(tp, pred, zero_division)
    recall = _divide(tp, true, zero_division)
    f1 = _divide(2 * tp, true + pred, zero_division)
    if average == "micro":
        return precision[:, 0], recall[:, 0], f1[:, 0]
    # scikit-learn averages over the labels present in the (resampled) references or predictions; the
    # weighted average weighs them by support (every reference is a present label, so support is never 0).
    weights = ((true + pred) > 0).astype(np.float64) if average == "macro" else true
    scale = weights.sum(axis=1)
    return (
        (precision * weights).sum(axis=1) / scale,
        (recall * weights).sum(axis=1) / scale,
        (f1 * weights).sum(axis=1) / scale,
    )


def _options(extract: Extraction, pattern: str | None, **extra: Any) -> dict[str, Any]:
    return {"extract": extract, "pattern": pattern, **extra}


def _averaged_result(
    name: str,
    measure: str,
    data: Labelled,
    inputs: EvalInputs,
    *,
    average: Average,
    zero_division: ZeroDivision,
    options: dict[str, Any],
    details: dict[str, Any],
    value: float | None = None,
) -> MetricResult:
    """Averaged precision, recall or F1 (``measure``): scikit-learn's value, a recomputing bootstrap CI."""
    index = _PRF_INDEX[measure]
    if value is None and not data.references:
        value = float("nan")
    elif value is None:
        # data.order holds exactly the labels scikit-learn finds by default; leaving ``labels`` unset keeps
        # the value bit-identical to a plain scikit-learn call.
        value = precision_recall_fscore_support(
            data.references, data.predicted, average=average, zero_division=zero_division
        )[index]
    return corpus_result(
        name,
        float(value),
        inputs,
        stats=prf_stats(data),
        score=lambda sums: prf_from_sums(sums, average=average, zero_division=zero_division)[index],
        higher_is_better=True,
        options=options,
        libraries=_LIBRARIES,
        details=details,
    )


def _register_averaged(name: str) -> None:
    def metric(
        inputs: EvalInputs,
        *,
        average: Average = "macro",
        zero_division: ZeroDivision = 0,
        extract: Extraction = "first_line",
        pattern: Regex | None = None,
    ) -> MetricResult:
        data = labelled(inputs, name, extract, pattern)
        options = _options(extract, pattern, average=average, zero_division=zero_division)
        details = {"labels": data.order, "invalid": data.invalid}
        return _averaged_result(
            name,
            name,
            data,
            inputs,
            average=average,
            zero_division=zero_division,
            options=options,
            details=details,
        )

    metric.__name__ = metric.__qualname__ = name
    metric.__doc__ = f"Averaged {name} (macro by default) over the labels that occur, by scikit-learn."
    register_metric(name, higher_is_better=True, needs_labels=True, check=check_extraction)(metric)


for _name in _PRF_INDEX:
    _register_averaged(_name)


@register_metric(
    "accuracy", higher_is_better=True, needs_labels=True, accepts_choices=True, check=check_extraction
)
def accuracy(
    inputs: EvalInputs, *, extract: Extraction = "first_line", pattern: Regex | None = None
) -> MetricResult:
    """Share of examples whose extracted label equals the reference; per-example scores are 1 or 0.

    Multiple choice by loglikelihood: the share whose likeliest choice (summed log-prob) is the gold.
    """
    if inputs.choice_logprobs is not None:
        return choice_accuracy(inputs, "accuracy", normalise=False)
    data = labelled(inputs, "accuracy", extract, pattern)
    details = {"labels": data.order, "invalid": data.invalid}
    return _accuracy_result("accuracy", data, inputs, _options(extract, pattern), details)


def _accuracy_result(
    name: str, data: Labelled, inputs: EvalInputs, options: dict[str, Any], details: dict[str, Any]
) -> MetricResult:
    scores = [float(p == r) for p, r in zip(data.predicted, data.references, strict=True)]
    value = float(accuracy_score(data.references, data.predicted)) if scores else None
    return decomposable_result(
        name,
        scores,
        inputs,
        higher_is_better=True,
        options=options,
        libraries=_LIBRARIES,
        details=details,
        value=value,
    )


@register_metric("confusion_matrix", higher_is_better=True, needs_labels=True, check=check_extraction)
def confusion(
    inputs: EvalInputs, *, extract: Extraction = "first_line", pattern: Regex | None = None
) -> MetricResult:
    """Accuracy as the value; details hold scikit-learn's confusion matrix (rows true, columns predicted)."""
    data = labelled(inputs, "confusion_matrix", extract, pattern)
    matrix = confusion_matrix(data.references, data.predicted, labels=data.order) if data.references else []
    details = {"labels": data.order, "matrix": np.asarray(matrix, dtype=int).tolist()}
    return _accuracy_result("confusion_matrix", data, inputs, _options(extract, pattern), details)


def _macro_f1_with_table(
    name: str,
    key: str,
    data: Labelled,
    inputs: EvalInputs,
    options: dict[str, Any],
    table: dict[str, Any],
    value: float | None = None,
) -> MetricResult:
    """Macro F1 (and its CI) with a per-label ``table`` under ``details[key]``."""
    return _averaged_result(
        name,
        "f1",
        data,
        inputs,
        average="macro",
        zero_division=options["zero_division"],
        options=options,
        details={"labels": data.order, key: table},
        value=value,
    )


@register_metric("per_class", higher_is_better=True, needs_labels=True, check=check_extraction)
def per_class(
    inputs: EvalInputs,
    *,
    zero_division: ZeroDivision = 0,
    extract: Extraction = "first_line",
    pattern: Regex | None = None,
) -> MetricResult:
    """Macro F1 as the value; ``details["per_class"]`` holds each label's precision, recall, F1, support."""
    data = labelled(inputs, "per_class", extract, pattern)
    table: dict[str, dict[str, float]] = {}
    if data.references:
        columns = precision_recall_fscore_support(
            data.references, data.predicted, labels=data.order, average=None, zero_division=zero_division
        )
        for i, label in enumerate(data.order):
            precision, recall, f1, support = (float(column[i]) for column in columns)
            table[label] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
    options = _options(extract, pattern, zero_division=zero_division)
    return _macro_f1_with_table("per_class", "per_class", data, inputs, options, table)


@register_metric("classification_report", higher_is_better=True, needs_labels=True, check=check_extraction)
def report(
    inputs: EvalInputs,
    *,
    zero_division: ZeroDivision = 0,
    extract: Extraction = "first_line",
    pattern: Regex | None = None,
) -> MetricResult:
    """The report's macro F1 as the value; ``details["report"]`` holds scikit-learn's report as a dict."""
    data = labelled(inputs, "classification_report", extract, pattern)
    table: dict[str, Any] = {}
    if data.references:
        table = _plain(
            classification_report(
                data.references,
                data.predicted,
                labels=data.order,
                output_dict=True,
                zero_division=zero_division,
            )
        )
    options = _options(extract, pattern, zero_division=zero_division)
    value = table["macro avg"]["f1-score"] if table else None
    return _macro_f1_with_table("classification_report", "report", data, inputs, options, table, value)


def _plain(value: Any) -> Any:
    """Numpy scalars inside scikit-learn's report turned into plain floats and ints."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value
