"""Pure metric code, one module per family, registered by name (see :mod:`evaluators.base`)."""

from posteval.evaluators.base import (
    BoundMetric,
    EvalInputs,
    MetricInfo,
    get_metric,
    known_metrics,
    register_metric,
    resolve_metric,
)

__all__ = [
    "BoundMetric",
    "EvalInputs",
    "MetricInfo",
    "get_metric",
    "known_metrics",
    "register_metric",
    "resolve_metric",
]
