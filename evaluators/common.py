"""Helpers every metric family shares: reference checks, option types, signatures and results.

The empty-input rule for every built-in metric: with no examples the value is NaN, the CI is (None, None),
``n`` is 0 and ``per_example`` is empty (or None where the metric has no per-example scores).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import jsonschema
import numpy as np
from pydantic import AfterValidator

from posteval.errors import MetricError
from posteval.evaluators.base import EvalInputs, aggregate
from posteval.judging.stats import ScoreFn, Stats, mean_ci, stats_ci
from posteval.results import MetricResult


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex {pattern!r} does not compile: {exc}") from exc
    return pattern


def _valid_schema(schema: dict[str, Any]) -> dict[str, Any]:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "(root)"
        raise ValueError(f"not a valid JSON schema at {where}: {exc.message}") from exc
    return schema


Regex = Annotated[str, AfterValidator(_compiles)]
"""A regular expression option; the suite is refused if it does not compile."""

JsonSchema = Annotated[dict[str, Any], AfterValidator(_valid_schema)]
"""A JSON-schema option; the suite is refused if the schema is invalid under its own metaschema."""


def require_references(inputs: EvalInputs, metric: str) -> Sequence[Any]:
    """The references, or a MetricError naming the metric that needed them."""
    if inputs.references is None:
        raise MetricError(f"metric {metric!r} needs references, and the dataset has none")
    if len(inputs.references) != len(inputs.predictions):
        raise MetricError(
            f"metric {metric!r}: {len(inputs.predictions)} predictions "
            f"but {len(inputs.references)} references"
        )
    return inputs.references


def reference_strings(reference: Any) -> list[str]:
    """One example's references as strings: a list of references stays a list, anything else is one."""
    if isinstance(reference, (list, tuple)):
        return [str(r) for r in reference]
    return [str(reference)]


def package_version(name: str) -> str:
    """Installed version of ``name``, or 'none'."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def make_signature(name: str, options: Mapping[str, Any], libraries: Sequence[str] = (), **extra: Any) -> str:
    """A sacrebleu-style signature: metric, sorted options, extra settings and library versions."""
    parts = [f"metric:{name}"]
    parts += [f"{key}:{_fmt(value)}" for key, value in sorted(options.items())]
    parts += [f"{key}:{_fmt(value)}" for key, value in sorted(extra.items())]
    parts += [f"{lib}:{package_version(lib)}" for lib in libraries]
    parts.append(f"posteval:{package_version('posteval')}")
    return "|".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if isinstance(value, Mapping):
        canonical = json.dumps(value, sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return str(value)


def make_result(
    name: str,
    value: float,
    inputs: EvalInputs,
    *,
    higher_is_better: bool,
    options: Mapping[str, Any],
    libraries: Sequence[str] = (),
    per_example: Sequence[float] | None = None,
    ci: tuple[float | None, float | None] = (None, None),
    details: dict[str, Any] | None = None,
) -> MetricResult:
    """A MetricResult with its signature (options, bootstrap settings, library versions)."""
    return MetricResult(
        name=name,
        value=float(value),
        higher_is_better=higher_is_better,
        n=len(inputs.predictions),
        signature=make_signature(name, options, libraries, bootstrap=inputs.n_bootstrap, seed=inputs.seed),
        per_example=None if per_example is None else [float(s) for s in per_example],
        ci_low=ci[0],
        ci_high=ci[1],
        details=details or {},
    )


def decomposable_result(
    name: str,
    scores: Sequence[float],
    inputs: EvalInputs,
    *,
    higher_is_better: bool,
    options: Mapping[str, Any],
    libraries: Sequence[str] = (),
    details: dict[str, Any] | None = None,
    value: float | None = None,
) -> MetricResult:
    """A result whose value is the mean of per-example ``scores`` (or ``value``, the library's equal figure).

    The CI is a bootstrap of the mean.
    """
    values = [float(s) for s in scores]
    if value is None:
        value = float(np.mean(values)) if values else float("nan")
    return make_result(
        name,
        value,
        inputs,
        higher_is_better=higher_is_better,
        options=options,
        libraries=libraries,
        per_example=values,
        ci=mean_ci(values, n_resamples=inputs.n_bootstrap, seed=inputs.seed),
        details=details,
    )


def corpus_ci(inputs: EvalInputs, stats: Stats, score: ScoreFn) -> tuple[float | None, float | None]:
    """CI of a corpus metric: ``score`` recomputed from per-example ``stats`` summed over each resample."""
    return stats_ci(stats, score, n_resamples=inputs.n_bootstrap, seed=inputs.seed)


def dense_rows(stats: Stats) -> list[list[float]]:
    """Per-example statistics as plain rows of floats (how they are stored)."""
    matrix = stats.toarray() if hasattr(stats, "toarray") else np.asarray(stats, dtype=np.float64)
    return [[float(v) for v in row] for row in np.asarray(matrix, dtype=np.float64)]


def corpus_result(
    name: str,
    value: float,
    inputs: EvalInputs,
    *,
    stats: Stats,
    aggregation: Mapping[str, Any],
    ci: tuple[float | None, float | None] | None = None,
    **fields: Any,
) -> MetricResult:
    """A corpus-level result: ``value`` from the library, CI from recomputing the metric on resampled stats.

    ``aggregation`` names the registered aggregator (``{"fn": name, **params}``) that maps summed ``stats``
    to the metric; both travel on the result, so comparisons recompute the same statistic later. ``ci``,
    when given, is the interval already computed another way (by default it resamples ``stats``).
    ``fields`` are :func:`make_result`'s keyword arguments (higher_is_better, options, per_example ...).
    """
    spec = dict(aggregation)
    if ci is None:
        ci = corpus_ci(inputs, stats, lambda sums: aggregate(spec, sums))
    result = make_result(name, value, inputs, ci=ci, **fields)
    return dataclasses.replace(result, stats=dense_rows(stats), aggregation=spec)
