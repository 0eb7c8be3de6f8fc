"""Classification metrics over a label set, computed with scikit-learn.

Labels come from generated text by the ``extract`` rule. Precision, recall and F1 average over the
dataset's declared label set, as scikit-learn does with ``labels=`` the label set (see
:mod:`evaluators.labels`): an answer outside it is wrong for its true class and a false positive of no
class, never a class of its own; ``invalid_rate`` says how many answers fell outside. Accuracy's CI is a
bootstrap of the mean; the averaged metrics' CIs recompute the average on every resample from resampled
per-label true / predicted / true-positive counts, exactly as scikit-learn with ``labels=`` would on the
resampled examples (every label of the set counts in the macro average; zero divisions score
``zero_division``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse

from posteval.evaluators.base import EvalInputs, register_aggregator, register_metric
from posteval.evaluators.choice import choice_accuracy
from posteval.evaluators.common import Regex, corpus_result, decomposable_result, make_result
from posteval.evaluators.labels import (
    INVALID,
    Extraction,
    Labelled,
    check_extraction,
    extract_label,
    labelled,
)
from posteval.results import MetricResult

__all__ = ["INVALID", "Extraction", "extract_label"]

Average = Literal["macro", "micro", "weighted"]
ZeroDivision = Literal[0, 1]
_LIBRARIES = ["scikit-learn"]
_PRF_INDEX = {"precision": 0, "recall": 1, "f1": 2}


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den != 0)
    return out


def label_set_stats(references: list[str], predicted: list[str], labels: list[str]) -> scipy.sparse.csr_array:
    """Per-example sufficient statistics over the suite's label set: one-hot tp, fp and fn per class, (n, 3C).

    A prediction outside ``labels`` (``<invalid>``) is a false negative of its true class and a false
    positive of none, as scikit-learn counts with ``labels=`` the label set; summed over any set of
    examples, :func:`prf_from_label_sums` gives scikit-learn's precision, recall and F1 on those examples.
    """
    index = {label: i for i, label in enumerate(labels)}
    n, c = len(references), len(labels)
    true = np.array([index[r] for r in references], dtype=np.int64)
    pred = np.array([index.get(p, -1) for p in predicted], dtype=np.int64)
    hit = true == pred
    wrong = np.flatnonzero(~hit)
    counted = wrong[pred[wrong] >= 0]  # a wrong label from the set is that label's false positive
    rows = np.concatenate([np.flatnonzero(hit), counted, wrong])
    cols = np.concatenate([true[hit], c + pred[counted], 2 * c + true[wrong]])
    return scipy.sparse.csr_array((np.ones(len(rows)), (rows, cols)), shape=(n, 3 * c))


@register_aggregator("prf_labels")
def prf_from_label_sums(
    sums: np.ndarray, *, measure: str, average: Average, zero_division: ZeroDivision = 0
) -> np.ndarray:
    """Precision, recall or F1 (``measure``) per row of summed :func:`label_set_stats`, averaged over every
    label of the set as scikit-learn does with ``labels=`` (macro: plain mean; weighted: by support)."""
    tp, fp, fn = np.split(sums, 3, axis=1)
    if average == "micro":
        tp, fp, fn = (a.sum(axis=1, keepdims=True) for a in (tp, fp, fn))
    values = {
        "precision": _divide(tp, tp + fp, zero_division),
        "recall": _divide(tp, tp + fn, zero_division),
        "f1": _divide(2 * tp, 2 * tp + fp + fn, zero_division),
    }[measure]
    if average == "micro":
        return values[:, 0]
    weights = np.ones_like(tp) if average == "macro" else tp + fn
    scale = weights.sum(axis=1)
    return _divide((values * weights).sum(axis=1), scale, zero_division)


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
    from sklearn.metrics import precision_recall_fscore_support  # lazy: a suite check never loads sklearn

    index = _PRF_INDEX[measure]
    if value is None and not data.references:
        value = float("nan")
    elif value is None:
        value = precision_recall_fscore_support(
            data.references, data.predicted, labels=data.labels, average=average, zero_division=zero_division
        )[index]
    return corpus_result(
        name,
        float(value),
        inputs,
        stats=label_set_stats(data.references, data.predicted, data.labels),
        aggregation={
            "fn": "prf_labels",
            "measure": measure,
            "average": average,
            "zero_division": zero_division,
        },
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
        details = {"labels": data.labels, "invalid": data.invalid}
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
    metric.__doc__ = f"Averaged {name} (macro by default) over the label set, by scikit-learn (labels=)."
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
    details = {"labels": data.labels, "invalid": data.invalid}
    return _accuracy_result("accuracy", data, inputs, _options(extract, pattern), details)


@register_metric("invalid_rate", higher_is_better=False, needs_labels=True, check=check_extraction)
def invalid_rate(
    inputs: EvalInputs, *, extract: Extraction = "first_line", pattern: Regex | None = None
) -> MetricResult:
    """Share of outputs outside the label set (``<invalid>``); per-example scores are 1 (invalid) or 0."""
    data = labelled(inputs, "invalid_rate", extract, pattern)
    scores = [float(p == INVALID) for p in data.predicted]
    return decomposable_result(
        "invalid_rate",
        scores,
        inputs,
        higher_is_better=False,
        options=_options(extract, pattern),
        details={"labels": data.labels, "invalid": data.invalid},
    )


def _accuracy_result(
    name: str, data: Labelled, inputs: EvalInputs, options: dict[str, Any], details: dict[str, Any]
) -> MetricResult:
    from sklearn.metrics import accuracy_score  # lazy: a suite check never loads sklearn

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


def _report_result(
    name: str, data: Labelled, inputs: EvalInputs, options: dict[str, Any], details: dict[str, Any]
) -> MetricResult:
    """A report: ``details`` only; the value is NaN and never stored (the run keeps the details)."""
    return make_result(
        name,
        float("nan"),
        inputs,
        higher_is_better=True,
        options=options,
        libraries=_LIBRARIES,
        details={**details, "invalid": data.invalid},
    )


@register_metric(
    "confusion_matrix", higher_is_better=True, needs_labels=True, is_report=True, check=check_extraction
)
def confusion(
    inputs: EvalInputs, *, extract: Extraction = "first_line", pattern: Regex | None = None
) -> MetricResult:
    """A report: scikit-learn's confusion matrix (rows true, columns predicted) over the labels that occur,
    ``<invalid>`` a column of its own."""
    from sklearn.metrics import confusion_matrix  # lazy: a suite check never loads sklearn

    data = labelled(inputs, "confusion_matrix", extract, pattern)
    matrix = confusion_matrix(data.references, data.predicted, labels=data.order) if data.references else []
    details = {"labels": data.order, "matrix": np.asarray(matrix, dtype=int).tolist()}
    return _report_result("confusion_matrix", data, inputs, _options(extract, pattern), details)


@register_metric(
    "per_class", higher_is_better=True, needs_labels=True, is_report=True, check=check_extraction
)
def per_class(
    inputs: EvalInputs,
    *,
    zero_division: ZeroDivision = 0,
    extract: Extraction = "first_line",
    pattern: Regex | None = None,
) -> MetricResult:
    """A report: each label's precision, recall, F1 and support over the label set (scikit-learn, labels=)."""
    from sklearn.metrics import precision_recall_fscore_support  # lazy: a suite check never loads sklearn

    data = labelled(inputs, "per_class", extract, pattern)
    table: dict[str, dict[str, float]] = {}
    if data.references:
        columns = precision_recall_fscore_support(
            data.references, data.predicted, labels=data.labels, average=None, zero_division=zero_division
        )
        for i, label in enumerate(data.labels):
            precision, recall, f1, support = (float(column[i]) for column in columns)
            table[label] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support)}
    options = _options(extract, pattern, zero_division=zero_division)
    return _report_result("per_class", data, inputs, options, {"labels": data.labels, "per_class": table})


@register_metric(
    "classification_report", higher_is_better=True, needs_labels=True, is_report=True, check=check_extraction
)
def report(
    inputs: EvalInputs,
    *,
    zero_division: ZeroDivision = 0,
    extract: Extraction = "first_line",
    pattern: Regex | None = None,
) -> MetricResult:
    """A report: scikit-learn's classification report over the label set (labels=), as a dict."""
    from sklearn.metrics import classification_report  # lazy: a suite check never loads sklearn

    data = labelled(inputs, "classification_report", extract, pattern)
    table: dict[str, Any] = {}
    if data.references:
        table = _plain(
            classification_report(
                data.references,
                data.predicted,
                labels=data.labels,
                output_dict=True,
                zero_division=zero_division,
            )
        )
    options = _options(extract, pattern, zero_division=zero_division)
    return _report_result(
        "classification_report", data, inputs, options, {"labels": data.labels, "report": table}
    )


def _plain(value: Any) -> Any:
    """Numpy scalars inside scikit-learn's report turned into plain floats and ints."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value
