"""The suite file: plain YAML data checked by a pydantic schema.

Every error names the file, the field (as a path such as ``datasets[0].metrics[1]``) and what was
expected. Relative dataset paths are resolved against the suite file's folder.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evaluators import BoundMetric, resolve_metric
from posteval.errors import MetricError, SuiteError
from posteval.hashing import sha256_json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationConfig(_Strict):
    """Greedy generation options shared by every generated dataset of the suite."""

    max_new_tokens: Annotated[int, Field(gt=0)] = 32
    stop: list[str] = Field(default_factory=lambda: ["\n"])
    batch_size: int | Literal["auto"] = 8

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive integer or 'auto'")
        return value


def template_fields(template: str) -> list[str]:
    """Names of the ``{field}`` placeholders in ``template``; ValueError if it does not parse."""
    names = []
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is not None:
            if not field_name.isidentifier():
                raise ValueError(f"placeholder {{{field_name}}} must be a plain field name")
            names.append(field_name)
    return names


class DatasetSpec(_Strict):
    """One held-out set and how to evaluate it."""

    name: Annotated[str, Field(min_length=1)]
    path: Path
    kind: Literal["generate", "perplexity"] = "generate"
    prompt: str | None = None
    reference: str | None = None
    labels: list[str] | None = None
    scoring: Literal["generate", "loglikelihood"] = "generate"
    text: str = "text"
    target_delimiter: str = " "
    stride: Annotated[int, Field(gt=0)] | None = None
    key: str | None = None
    split: str | None = None
    general: bool = False
    metrics: Annotated[list[str | dict[str, dict[str, Any] | None]], Field(min_length=1)]

    @field_validator("prompt")
    @classmethod
    def _prompt_parses(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if self.kind == "generate" and self.prompt is None:
            raise ValueError("a generated dataset needs a 'prompt' template such as 'Q: {question}\\nA:'")
        if self.kind == "perplexity" and self.scoring != "generate":
            raise ValueError("a perplexity dataset is scored on its text; 'scoring' does not apply")
        if self.scoring == "loglikelihood" and not self.labels:
            raise ValueError("scoring: loglikelihood needs 'labels' (the choices to score)")
        return self

    def bound_metrics(self) -> list[BoundMetric]:
        """The dataset's metrics with validated options."""
        return [resolve_metric(spec) for spec in self.metrics]

    def prompt_fields(self) -> list[str]:
        """Fields every row must have for this dataset."""
        fields = template_fields(self.prompt) if self.prompt else [self.text]
        for extra in (self.reference, self.key):
            if extra and extra not in fields:
                fields.append(extra)
        return fields


class Suite(_Strict):
    """A suite: the datasets a checkpoint is evaluated on, and how."""

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    base_model: str | None = None
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    seed: int = 0
    bootstrap_resamples: Annotated[int, Field(ge=0)] = 1000
    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[DatasetSpec]) -> list[DatasetSpec]:
        seen: set[str] = set()
        for spec in datasets:
            if spec.name in seen:
                raise ValueError(f"dataset name {spec.name!r} appears twice")
            seen.add(spec.name)
        return datasets

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset spec called ``name``."""
        for spec in self.datasets:
            if spec.name == name:
                return spec
        raise KeyError(name)


class LoadedSuite(BaseModel):
    """A validated suite with where it came from and its source text."""

    model_config = ConfigDict(frozen=True)

    suite: Suite
    path: Path
    source_text: str
    fingerprint: str


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    if loc[:1] == ("datasets",) and len(loc) > 2:
        return DatasetSpec
    if loc[:1] == ("generation",):
        return GenerationConfig
    return Suite


def _describe(error: Any) -> str:
    kind, msg, loc = error["type"], error["msg"], error["loc"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_model_at(loc).model_fields)
        return f"unknown field {loc[-1]!r} (expected one of: {allowed})"
    if kind == "missing":
        return "required field is missing"
    return f"{msg.removeprefix('Value error, ')} (got {error.get('input')!r})"


def _check_metrics(suite: Suite, path: Path) -> None:
    for i, spec in enumerate(suite.datasets):
        for j, metric in enumerate(spec.metrics):
            where = f"{path}: datasets[{i}].metrics[{j}]"
            try:
                bound = resolve_metric(metric)
            except MetricError as exc:
                raise SuiteError(f"{where}: {exc}") from exc
            info = bound.info
            if info.needs_references and spec.kind == "generate" and spec.reference is None:
                raise SuiteError(
                    f"{where}: metric {info.name!r} needs references, and dataset {spec.name!r} "
                    "names no 'reference' field"
                )
            if info.needs_labels and not spec.labels:
                raise SuiteError(
                    f"{where}: metric {info.name!r} needs the dataset's 'labels' (the label set)"
                )


def parse_suite(text: str, path: Path) -> tuple[Suite, str]:
    """Validate suite ``text`` read from ``path``; returns the suite and its content fingerprint.

    The fingerprint covers the validated content with dataset paths as written, so comments, layout and
    the folder the suite lives in do not change it. Relative dataset paths resolve against the file's folder.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: expected a mapping with 'name' and 'datasets' at the top level")
    try:
        suite = Suite.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise SuiteError(f"{path}: {_loc(first['loc'])}: {_describe(first)}{more}") from exc
    _check_metrics(suite, path)
    fingerprint = sha256_json(suite.model_dump(mode="json"))
    root = path.parent
    datasets = [
        spec.model_copy(update={"path": spec.path if spec.path.is_absolute() else (root / spec.path)})
        for spec in suite.datasets
    ]
    return suite.model_copy(update={"datasets": datasets}), fingerprint


def load_suite(path: str | Path) -> LoadedSuite:
    """Read and validate the suite file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SuiteError(f"{path}: suite file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read suite file: {exc}") from exc
    suite, fingerprint = parse_suite(text, path)
    return LoadedSuite(suite=suite, path=path.resolve(), source_text=text, fingerprint=fingerprint)
