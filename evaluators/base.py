"""The metric registry: metrics are plain functions registered by name with their options.

A metric function takes an :class:`EvalInputs` and keyword-only options and returns a
:class:`~posteval.results.MetricResult`. The suite names metrics as ``"accuracy"`` or
``{"f1": {"average": "macro"}}``; :func:`resolve_metric` turns that into a :class:`BoundMetric`,
refusing an unknown name (with the closest known one) or an unknown or ill-typed option.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pydantic

from posteval.errors import MetricError
from posteval.results import MetricResult

Category = Literal["task", "general", "overfitting"]


@dataclass(frozen=True)
class EvalInputs:
    """Everything a metric may look at for one dataset, in example order."""

    predictions: Sequence[str]
    references: Sequence[Any] | None = None
    labels: Sequence[str] | None = None
    rows: Sequence[Mapping[str, Any]] | None = None
    # Loglikelihood-derived quantities, for perplexity-like metrics.
    logprob_sums: Sequence[float] | None = None
    token_counts: Sequence[int] | None = None
    byte_counts: Sequence[int] | None = None
    # Multiple choice by loglikelihood: each example's choices and their summed log-probs, in choice order
    # (``references`` then hold the correct choice's text).
    choices: Sequence[Sequence[str]] | None = None
    choice_logprobs: Sequence[Sequence[float]] | None = None
    # LLM-judge verdicts (posteval.judges.engine): per-example records under "pointwise" and "pairwise".
    judgments: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
    seed: int = 0
    n_bootstrap: int = 1000


MetricFn = Callable[..., MetricResult]
# Checks options together (e.g. "extract: regex needs a pattern"); raises ValueError naming the option.
OptionsCheck = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class MetricInfo:
    """A registered metric: its function and what it needs."""

    name: str
    fn: MetricFn
    higher_is_better: bool
    category: Category
    needs_references: bool
    needs_labels: bool
    options_model: type[pydantic.BaseModel]
    needs_loglikelihoods: bool = False
    needs_choices: bool = False  # only for multiple choice by loglikelihood (scoring: loglikelihood)
    # A report (confusion matrix, per-class table): stored as the run's details, never compared or gated.
    is_report: bool = False
    accepts_choices: bool = False  # works on per-row choices in place of a label set
    # An LLM-judge metric: needs the dataset's `judge:` section; a task metric, general on `general: true`.
    needs_judgments: bool = False


_REGISTRY: dict[str, MetricInfo] = {}


def _options_model(name: str, fn: MetricFn, check: OptionsCheck | None) -> type[pydantic.BaseModel]:
    """A pydantic model of the function's keyword-only options, so suite options are type-checked.

    An option named like a BaseModel attribute (``schema``) is stored under a trailing underscore with
    the option's name as its alias; :func:`option_defaults` and :func:`resolve_metric` speak option names.
    """
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn, eval_str=True).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        if hasattr(pydantic.BaseModel, param.name):
            fields[f"{param.name}_"] = (annotation, pydantic.Field(default, alias=param.name))
        else:
            fields[param.name] = (annotation, default)
    validators: dict[str, Any] = {}
    if check is not None:

        def _check(model: pydantic.BaseModel) -> pydantic.BaseModel:
            check(model.model_dump(by_alias=True))
            return model

        validators["check"] = pydantic.model_validator(mode="after")(_check)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model(f"{name}_options", __config__=config, __validators__=validators, **fields)


def option_defaults(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """Each optional option's default, keyed by option name."""
    return {
        field.alias or key: field.default
        for key, field in model.model_fields.items()
        if not field.is_required()
    }


def option_names(model: type[pydantic.BaseModel]) -> list[str]:
    """Every option's name, as the suite spells it."""
    return [field.alias or key for key, field in model.model_fields.items()]


def register_metric(
    name: str,
    *,
    higher_is_better: bool,
    category: Category = "task",
    needs_references: bool = True,
    needs_labels: bool = False,
    needs_loglikelihoods: bool = False,
    needs_choices: bool = False,
    accepts_choices: bool = False,
    is_report: bool = False,
    needs_judgments: bool = False,
    check: OptionsCheck | None = None,
) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn`` under ``name``; a second registration of the same name is an error.

    ``check`` validates the options together when the suite loads; it raises ValueError naming the option.
    ``needs_loglikelihoods`` marks metrics of scored text (``kind: perplexity`` datasets) — only those.
    ``needs_choices`` marks metrics of multiple choice scores (``scoring: loglikelihood``) — only those;
    ``accepts_choices`` lets a metric that needs labels run on per-row ``choices`` instead.
    ``is_report`` marks a report: its result's ``details`` are stored as the run's details, its value never.
    """

    def decorate(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise MetricError(f"metric {name!r} is registered twice")
        _REGISTRY[name] = MetricInfo(
            name=name,
            fn=fn,
            higher_is_better=higher_is_better,
            category=category,
            needs_references=needs_references,
            needs_labels=needs_labels,
            needs_loglikelihoods=needs_loglikelihoods,
            needs_choices=needs_choices,
            accepts_choices=accepts_choices,
            is_report=is_report,
            needs_judgments=needs_judgments,
            options_model=_options_model(name, fn, check),
        )
        return fn

    return decorate


def known_metrics() -> list[str]:
    """Names of every registered metric, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_metric(name: str) -> MetricInfo:
    """The registered metric ``name``, or a custom one named ``package.module:function``."""
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _import_custom(name)
    known = sorted(_REGISTRY)
    # A stored name such as "f1_macro" (or a suffixed one, "bleu_score") points back to its metric first.
    close = [k for k in known if name.startswith(f"{k}_")][-1:] or difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise MetricError(f"unknown metric {name!r}.{hint} Known metrics: {', '.join(known)}")


def _import_custom(path: str) -> MetricInfo:
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:  # ":f", ".mod:f": the last two
        raise MetricError(f"cannot import custom metric {path!r}: {exc}") from exc
    if path not in _REGISTRY:
        for info in _REGISTRY.values():
            if info.fn is fn:
                return info
        raise MetricError(
            f"custom metric {path!r} is not registered: decorate it with "
            "@evaluators.register_metric(name, higher_is_better=...)"
        )
    return _REGISTRY[path]


@dataclass(frozen=True)
class BoundMetric:
    """A metric with validated options, ready to compute."""

    info: MetricInfo
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The stored metric name: the registered name, suffixed with non-default option values."""
        defaults = option_defaults(self.info.options_model)
        suffix = [
            _option_label(key, value)
            for key, value in sorted(self.options.items())
            if key not in defaults or defaults[key] != value
        ]
        return "_".join([self.info.name, *suffix])

    def compute(self, inputs: EvalInputs) -> MetricResult:
        """Run the metric on ``inputs``."""
        if self.info.needs_references and inputs.references is None:
            raise MetricError(f"metric {self.info.name!r} needs references, and the dataset has none")
        return dataclasses.replace(self.info.fn(inputs, **self.options), name=self.name)


_PLAIN = re.compile(r"[\w.+-]{1,32}")


def _option_label(key: str, value: Any) -> str:
    """A name suffix: ``key``/``no_key`` for flags, the bare value for words, ``key-value`` for numbers."""
    if value is True:
        return key
    if value is False:
        return f"no_{key}"
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and _PLAIN.fullmatch(v) for v in value):
        return "-".join(value)
    if isinstance(value, (int, float)) or value is None:
        return f"{key}-{value}"
    # Schemas, patterns and long values: a short stable digest (the signature keeps the full value).
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    return f"{key}-{digest[:8]}"


MetricSpec = str | Mapping[str, Mapping[str, Any] | None]


def resolve_metric(spec: MetricSpec) -> BoundMetric:
    """Turn a suite's metric entry into a BoundMetric, validating its name and options."""
    if isinstance(spec, str):
        name, raw_options = spec, {}
    elif isinstance(spec, Mapping) and len(spec) == 1:
        name, raw = next(iter(spec.items()))
        if raw is not None and not isinstance(raw, Mapping):
            raise MetricError(f"options of metric {name!r} must be a mapping, got {raw!r}")
        raw_options = dict(raw or {})
    else:
        raise MetricError(
            f"a metric is a name or a one-key mapping {{name: {{option: value}}}}, got {spec!r}"
        )
    info = get_metric(str(name))
    try:
        validated = info.options_model(**raw_options)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_describe_option_error(err) for err in exc.errors())
        allowed = ", ".join(option_names(info.options_model)) or "none"
        raise MetricError(f"metric {name!r}: {problems} (allowed options: {allowed})") from exc
    dumped = validated.model_dump(by_alias=True)
    options = {key: dumped[key] for key in raw_options}
    return BoundMetric(info=info, options=options)


def _describe_option_error(error: Any) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a check over several options names them itself
        return message
    return f"option {'.'.join(str(part) for part in error['loc'])!r}: {message}"


# Maps summed sufficient statistics, (rows, k), to one metric value per row; parameters are JSON values.
Aggregator = Callable[..., np.ndarray]
_AGGREGATORS: dict[str, Aggregator] = {}


def register_aggregator(name: str) -> Callable[[Aggregator], Aggregator]:
    """Register how a corpus metric is computed from summed per-example statistics.

    A result names its aggregator in ``MetricResult.aggregation`` (``{"fn": name, **params}``); the
    comparison core finds it here to recompute the metric on paired resamples of stored statistics.
    """

    def decorate(fn: Aggregator) -> Aggregator:
        if name in _AGGREGATORS and _AGGREGATORS[name] is not fn:
            raise MetricError(f"aggregator {name!r} is registered twice")
        _AGGREGATORS[name] = fn
        return fn

    return decorate


def aggregate(spec: Mapping[str, Any], sums: np.ndarray) -> np.ndarray:
    """The metric per row of summed statistics ``sums`` (rows, k), by the aggregator ``spec`` names."""
    _load_builtins()
    params = {key: value for key, value in spec.items() if key != "fn"}
    fn = _AGGREGATORS.get(str(spec.get("fn")))
    if fn is None:
        raise MetricError(f"unknown aggregator {spec.get('fn')!r}; known: {', '.join(sorted(_AGGREGATORS))}")
    return np.asarray(fn(np.atleast_2d(np.asarray(sums, dtype=np.float64)), **params), dtype=np.float64)


def _load_builtins() -> None:
    # Importing the family modules registers their metrics.
    importlib.import_module("posteval.evaluators.builtin")
