"""The suite file: plain YAML data checked by a pydantic schema.

Every error names the file, the field (as a path such as ``datasets[0].metrics[1]``) and what was
expected. Relative dataset paths are resolved against the suite file's folder.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel

from posteval.errors import MetricError, SuiteError
from posteval.evaluators import resolve_metric
from posteval.hashing import sha256_json
from posteval.inputs.suite_schema import (
    HEALTH_DATASETS,
    DatasetSpec,
    FewShot,
    Gate,
    GenerationConfig,
    LoadedSuite,
    LossSample,
    Sampling,
    SandboxOptions,
    Suite,
    TrainingHealth,
    hub_id,
    template_fields,
)
from posteval.judging.forgetting import ForgettingOptions

__all__ = [
    "HEALTH_DATASETS",
    "DatasetSpec",
    "Gate",
    "GenerationConfig",
    "LoadedSuite",
    "LossSample",
    "Suite",
    "TrainingHealth",
    "load_suite",
    "parse_suite",
    "template_fields",
]

log = logging.getLogger(__name__)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key written twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: construct_mapping below says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} on lines {first} and {line}", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    if loc[:1] == ("datasets",) and len(loc) > 3 and loc[2] == "fewshot":
        return FewShot
    if loc[:1] == ("datasets",) and len(loc) > 3 and loc[2] in ("sampling", "sandbox"):
        return Sampling if loc[2] == "sampling" else SandboxOptions
    if loc[:1] == ("datasets",) and len(loc) > 2:
        return DatasetSpec
    if loc[:1] == ("generation",):
        return GenerationConfig
    if loc[:1] == ("training_health",):
        return LossSample if len(loc) > 2 and loc[1] in ("train_sample", "validation") else TrainingHealth
    if loc[:1] == ("forgetting",):
        return ForgettingOptions
    if loc[:1] == ("gates",):
        return Gate
    return Suite


def _describe(error: Any) -> str:
    kind, msg, loc = error["type"], error["msg"], error["loc"]
    if kind == "extra_forbidden":
        fields = _model_at(loc).model_fields
        allowed = ", ".join(info.alias or name for name, info in fields.items())
        return f"unknown field {loc[-1]!r} (expected one of: {allowed})"
    if kind == "missing":
        return "required field is missing"
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 80 else shown[:77] + "..."  # a huge value is named, not echoed
    return f"{msg.removeprefix('Value error, ')} (got {shown})"


def _check_metrics(suite: Suite, path: Path) -> None:
    for i, spec in enumerate(suite.datasets):
        names: dict[str, int] = {}
        for j, metric in enumerate(spec.metrics):
            where = f"{path}: datasets[{i}].metrics[{j}]"
            try:
                bound = resolve_metric(metric)
            except MetricError as exc:
                raise SuiteError(f"{where}: {exc}") from exc
            info = bound.info
            if bound.name in names:
                raise SuiteError(
                    f"{where}: stores the same metric {bound.name!r} as datasets[{i}].metrics"
                    f"[{names[bound.name]}]; give one of them different options or remove it"
                )
            names[bound.name] = j
            scored_text = spec.kind == "perplexity"
            if info.needs_loglikelihoods != scored_text:
                expected = (
                    "a dataset with kind: perplexity" if info.needs_loglikelihoods else "generated outputs"
                )
                raise SuiteError(
                    f"{where}: metric {info.name!r} needs {expected}, and dataset {spec.name!r} "
                    f"has kind: {spec.kind}"
                )
            if info.needs_execution != (spec.kind == "code"):
                raise SuiteError(
                    f"{where}: metric {info.name!r} "
                    + (
                        f"runs programs and needs a dataset with kind: code, and dataset {spec.name!r} "
                        f"has kind: {spec.kind}"
                        if info.needs_execution
                        else f"does not apply to dataset {spec.name!r} of kind: code "
                        "(use pass_at_k or pass_rate)"
                    )
                )
            if info.needs_execution and int(bound.options.get("k", 1)) > spec.samples():
                raise SuiteError(
                    f"{where}: {bound.name} needs at least {bound.options['k']} samples per problem, and "
                    f"dataset {spec.name!r} draws {spec.samples()} (set sampling: {{n: ...}})"
                )
            if info.needs_references and spec.kind == "generate" and spec.reference is None:
                raise SuiteError(
                    f"{where}: metric {info.name!r} needs references, and dataset {spec.name!r} "
                    "names no 'reference' field"
                )
            if info.needs_labels and not spec.labels and not (info.accepts_choices and spec.choices):
                raise SuiteError(
                    f"{where}: metric {info.name!r} needs the dataset's 'labels' (the label set)"
                )
            if info.needs_choices and spec.scoring != "loglikelihood":
                raise SuiteError(
                    f"{where}: metric {info.name!r} needs multiple choice scores, and dataset "
                    f"{spec.name!r} has scoring: {spec.scoring} (use scoring: loglikelihood)"
                )


def _yaml_problem(path: Path, exc: yaml.YAMLError, text: str) -> str:
    """A YAML error in one line: file:line, what is wrong, and the column (PyYAML's text spans lines)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = " ".join(f"{exc.context or ''} {exc.problem or ''}".split())
        if problem.startswith("duplicate key"):
            return f"{path}:{mark.line + 1}: {problem}; each key once"
        return f"{path}:{mark.line + 1}: not valid YAML: {problem} (column {mark.column + 1})"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"{path}:{line}: not valid YAML: character #x{char:04x} is not allowed in YAML"
    return f"{path}: not valid YAML: {' '.join(str(exc).split())}"


def parse_suite(text: str, path: Path) -> tuple[Suite, str]:
    """Validate suite ``text`` read from ``path``; returns the suite and its content fingerprint.

    The fingerprint covers the validated content with dataset paths as written, so comments, layout and
    the folder the suite lives in do not change it. Relative dataset paths resolve against the file's folder.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SuiteError(_yaml_problem(path, exc, text)) from exc
    except RecursionError as exc:
        raise SuiteError(f"{path}: not valid YAML: nested too deeply") from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected a mapping with 'name' and 'datasets' at the top level")
    try:
        suite = Suite.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise SuiteError(f"{path}: {_loc(first['loc'])}: {_describe(first)}{more}") from exc
    _check_metrics(suite, path)
    _check_gates(suite, path)
    _check_primary(suite, path)
    _check_rule_of_three(suite, path)
    content = suite.model_dump(mode="json")
    if content["primary"] is None:  # suites written before the key existed keep their fingerprint
        del content["primary"]
    fingerprint = sha256_json(content)
    return _resolve_paths(suite, path.parent), fingerprint


# Stored by `posteval human import` on a dataset of generated answers: gated like any metric once labelled.
HUMAN_METRICS = ("human_score", "human_win_rate")


def metric_names(suite: Suite) -> list[str]:
    """Every ``dataset/metric`` the suite stores, in suite order: what gates may name (reports are not;
    the human metrics of every generated dataset are)."""
    names = []
    for spec in suite.all_datasets():
        metrics = [metric for metric in spec.bound_metrics() if not metric.info.is_report]
        names += [f"{spec.name}/{metric.name}" for metric in metrics]
        if spec.kind == "generate" and spec.scoring == "generate":
            names += [f"{spec.name}/{name}" for name in HUMAN_METRICS]
    return names


def report_names(suite: Suite) -> list[str]:
    """Every ``dataset/report`` the suite stores as the run's details."""
    return [
        f"{spec.name}/{metric.name}"
        for spec in suite.all_datasets()
        for metric in spec.bound_metrics()
        if metric.info.is_report
    ]


def _check_gates(suite: Suite, path: Path) -> None:
    known = metric_names(suite)
    reports = report_names(suite)
    for key in suite.gates:
        if key in reports:
            raise SuiteError(
                f"{path}: gates.{key}: {key.split('/')[-1]!r} is a report, stored as the run's details; "
                f"reports are never compared or gated. Gate a metric instead: {', '.join(known)}"
            )
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SuiteError(
                f"{path}: gates.{key}: no such dataset/metric in the suite.{hint} Known: {', '.join(known)}"
            )


def _check_primary(suite: Suite, path: Path) -> None:
    if suite.primary is None:
        return
    known = metric_names(suite)
    if suite.primary in report_names(suite):
        raise SuiteError(
            f"{path}: primary: {suite.primary!r} is a report, not a metric; "
            f"expected one of {', '.join(known)}"
        )
    if suite.primary not in known:
        close = difflib.get_close_matches(suite.primary, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SuiteError(
            f"{path}: primary: {suite.primary!r} is no DATASET/METRIC of the suite.{hint} "
            f"Expected one of {', '.join(known)}"
        )


def _absolute(root: Path, value: Path) -> Path:
    return value if value.is_absolute() else root / value


def _resolve_dataset(spec: DatasetSpec, root: Path) -> DatasetSpec:
    """A dataset's local paths (its file and a few-shot file) resolved; hub ids and split names kept."""
    update: dict[str, Any] = {}
    if hub_id(spec.path) is None:
        update["path"] = _absolute(root, spec.path)
    if spec.fewshot is not None and not spec.fewshot.is_split() and hub_id(spec.fewshot.source) is None:
        source = str(_absolute(root, Path(spec.fewshot.source)))
        update["fewshot"] = spec.fewshot.model_copy(update={"source": source})
    return spec.model_copy(update=update)


def _resolve_paths(suite: Suite, root: Path) -> Suite:
    """Relative dataset, loss-sample, tokenizer and base-model paths, resolved against the suite's folder."""
    update: dict[str, Any] = {"datasets": [_resolve_dataset(spec, root) for spec in suite.datasets]}
    if suite.base_model and not suite.base_model.startswith(("openai:", "hf:")):
        update["base_model"] = str(_absolute(root, Path(suite.base_model)))
    if suite.tokenizer is not None:
        update["tokenizer"] = _absolute(root, suite.tokenizer)
    health = suite.training_health
    if health is not None and health.train_sample is not None and health.validation is not None:
        update["training_health"] = health.model_copy(
            update={
                name: sample.model_copy(update={"path": _absolute(root, sample.path)})
                for name, sample in (("train_sample", health.train_sample), ("validation", health.validation))
            }
        )
    return suite.model_copy(update=update)


RULE_OF_THREE = {
    "task": "a task metric (accuracy, f1, exact_match, bleu, rouge, json_*, regex_match, pass_at_k, ...)",
    "general": "a general-quality metric (perplexity or bits_per_byte on general text, or an LLM judge)",
    "overfitting": "an overfitting detector (a 'training_health' section: train vs validation loss gap)",
}


def missing_kinds(suite: Suite) -> list[str]:
    """Which of the rule of three's metric kinds the suite lacks."""
    covered = set().union(*(spec.categories() for spec in suite.datasets)) - {"overfitting"}
    if suite.training_health is not None:  # the detector is the training_health section, nothing else
        covered.add("overfitting")
    return [kind for kind in RULE_OF_THREE if kind not in covered]


_warned: set[str] = set()


def _check_rule_of_three(suite: Suite, path: Path) -> None:
    missing = missing_kinds(suite)
    if not missing:
        return
    message = f"{path}: the suite lacks " + "; ".join(RULE_OF_THREE[kind] for kind in missing)
    if suite.allow_incomplete:
        if message not in _warned:  # the CLI checks the suite, then the flow loads it again: say it once
            _warned.add(message)
            log.warning("%s (allowed by allow_incomplete: true)", message)
        return
    raise SuiteError(
        f"{message}. Every suite measures all three; set allow_incomplete: true to run it anyway"
    )


def load_suite(path: str | Path) -> LoadedSuite:
    """Read and validate the suite file at ``path``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise SuiteError(f"{path}: suite file not found") from exc
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite file: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise SuiteError(f"{path}: the suite file is empty (expected a mapping with 'name' and 'datasets')")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the suite as UTF-8"
        ) from exc
    suite, fingerprint = parse_suite(text, path)
    return LoadedSuite(suite=suite, path=path.resolve(), source_text=text, fingerprint=fingerprint)
