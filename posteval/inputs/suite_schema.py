"""The suite file's schema (pydantic, extra fields refused, frozen): generation settings, datasets,
training health, gates, and the suite itself. Loading and the checks across fields live in suite.py.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from posteval.errors import MetricError
from posteval.evaluators import BoundMetric, resolve_metric
from posteval.judges.spec import JudgeSpec
from posteval.judging.forgetting import ForgettingOptions
from posteval.judging.health import HealthOptions


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
    """Names of the ``{field}`` placeholders in ``template``; ValueError if it does not parse.

    Only plain ``{field}`` is allowed: a format spec (``{text:>99999999999}``) or a conversion
    (``{text!r}``) would let a suite pad a prompt to any size or show Python reprs to the model.
    """
    names = []
    for _, field_name, spec, conversion in string.Formatter().parse(template):
        if field_name is not None:
            if not field_name.isidentifier():
                raise ValueError(f"placeholder {{{field_name}}} must be a plain field name")
            if spec or conversion:
                shown = ("!" + conversion if conversion else "") + (":" + spec if spec else "")
                written = f"{{{field_name}{shown}}}"
                raise ValueError(
                    f"placeholder {written!r} has a format spec or conversion; write it as {{{field_name}}}"
                )
            names.append(field_name)
    return names


PAIRWISE_METRICS = {"win_rate", "tie_rate", "loss_rate", "judge_position_inconsistency"}
HUB_PREFIX = "hf://"
ChatSetting = bool | Literal["auto"]


def hub_id(path: str | Path) -> str | None:
    """``ORG/NAME`` for a hub path ``hf://ORG/NAME`` (a Path folds ``//`` to ``/``), else None."""
    text = str(path)
    if not text.startswith("hf:"):
        return None
    return text.removeprefix("hf:").lstrip("/")


class FewShot(_Strict):
    """Worked examples before every prompt: ``n`` rows drawn with ``seed`` from ``from``.

    ``from`` is a file (or saved dataset folder) or, for a hub dataset or a saved DatasetDict, the name
    of another split; never the evaluated rows themselves.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    n: Annotated[int, Field(gt=0)]
    source: Annotated[str, Field(alias="from", min_length=1)]
    seed: int = 0

    def is_split(self) -> bool:
        """Whether ``from`` names a split of the evaluated set rather than a file or folder."""
        return hub_id(self.source) is None and "/" not in self.source and not Path(self.source).suffix


class DatasetSpec(_Strict):
    """One held-out set and how to evaluate it."""

    name: Annotated[str, Field(min_length=1)]
    path: Path
    config: str | None = None  # a hub dataset's configuration (hf:// paths only)
    revision: str | None = None  # a hub dataset's branch, tag or commit (hf:// paths only)
    chat: ChatSetting | None = None  # None: the suite's setting
    system: str | None = None  # None: the suite's system message
    fewshot: FewShot | None = None
    kind: Literal["generate", "perplexity"] = "generate"
    prompt: str | None = None
    reference: str | None = None
    labels: list[str] | None = None
    choices: str | None = None  # a row field holding that row's choices (multiple choice by loglikelihood)
    scoring: Literal["generate", "loglikelihood"] = "generate"
    text: str = "text"
    target_delimiter: str = " "
    stride: Annotated[int, Field(gt=0)] | None = None
    key: str | None = None
    split: str | None = None
    limit: Annotated[int, Field(gt=0)] | None = None
    general: bool = False
    judge: JudgeSpec | None = None  # an LLM judge of the answers (posteval.judges)
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
        if self.scoring == "loglikelihood" and not self.labels and not self.choices:
            raise ValueError(
                "scoring: loglikelihood needs 'labels' (the choices to score) or 'choices' (a row field "
                "holding each row's choices)"
            )
        if self.choices is not None and self.scoring != "loglikelihood":
            raise ValueError("'choices' (per-row choices) needs scoring: loglikelihood")
        if self.choices is not None and self.labels:
            raise ValueError("give the choices once: 'labels' for every row, or 'choices' per row")
        if (self.config is not None or self.revision is not None) and hub_id(self.path) is None:
            raise ValueError("'config' and 'revision' apply to hub datasets only (path: hf://ORG/NAME)")
        if self.kind == "perplexity" and (self.chat is True or self.fewshot is not None):
            raise ValueError("rolling perplexity scores the text as it is: no 'chat' or 'fewshot'")
        if self.fewshot is not None and self.reference is None:
            raise ValueError("'fewshot' needs a 'reference' field: it is each worked example's answer")
        if self.labels and len(set(self.labels)) != len(self.labels):
            repeated = sorted({label for label in self.labels if self.labels.count(label) > 1})
            raise ValueError(f"'labels' repeats {repeated}; each label once")
        self._judge_consistent()
        return self

    def _judge_consistent(self) -> None:
        try:
            judged = [metric.info.name for metric in self.bound_metrics() if metric.info.needs_judgments]
        except MetricError:  # an unknown metric or option: the suite's metric check says which, with where
            judged = []
        if self.judge is None:
            if judged:
                raise ValueError(f"metrics {judged} need a 'judge' section (model, rubric and/or pairwise)")
            return
        if self.kind != "generate" or self.scoring != "generate":
            raise ValueError("a 'judge' judges generated answers: kind: generate, scoring: generate")
        if self.judge.rubric is None and "judge_score" in judged:
            raise ValueError("metric 'judge_score' needs the judge's 'rubric'")
        pairwise = sorted(set(judged) & PAIRWISE_METRICS)
        if self.judge.pairwise is None and pairwise:
            raise ValueError(f"metrics {pairwise} need the judge's 'pairwise' section")

    def bound_metrics(self) -> list[BoundMetric]:
        """The dataset's metrics with validated options."""
        return [resolve_metric(spec) for spec in self.metrics]

    def categories(self) -> set[str]:
        """The rule-of-three categories this dataset's metrics cover (reports are not metrics); a judge
        metric is a task metric, and a general-quality one on a ``general: true`` dataset."""
        return {
            "general" if metric.info.needs_judgments and self.general else metric.info.category
            for metric in self.bound_metrics()
            if not metric.info.is_report
        }

    def prompt_fields(self) -> list[str]:
        """Fields every row must have for this dataset (a perplexity prompt templates the scored text)."""
        fields = template_fields(self.prompt) if self.prompt else [self.text]
        rubric = self.judge.rubric if self.judge is not None else None
        for extra in (self.reference, self.key, self.choices, rubric.reference if rubric else None):
            if extra and extra not in fields:
                fields.append(extra)
        return fields


class LossSample(_Strict):
    """Texts on which the runner measures mean token loss: a train sample or a validation set."""

    path: Path
    template: str = "{text}"
    limit: Annotated[int, Field(gt=0)] | None = None
    split: str | None = None

    @field_validator("template")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        template_fields(value)
        return value


class TrainingHealth(HealthOptions):
    """The overfitting detector: thresholds, and optionally texts to measure the loss gap on."""

    train_sample: LossSample | None = None
    validation: LossSample | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> TrainingHealth:
        if (self.train_sample is None) != (self.validation is None):
            raise ValueError("a measured loss gap needs both 'train_sample' and 'validation'")
        return self


HEALTH_DATASETS = ("train-sample", "validation")


class Gate(_Strict):
    """A regression gate on one metric: the tolerated drop (in the metric's units) and the test's level."""

    max_drop: float = Field(0.0, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1)


class Suite(_Strict):
    """A suite: the datasets a checkpoint is evaluated on, and how."""

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    base_model: str | None = None
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    # The tokenization policy (posteval.runners.base.PrefixPolicy): auto, always or never.
    bos: Literal["auto", "always", "never"] = "auto"
    # Chat templates (posteval.runners.chat): on, off, or auto (on when the evaluated checkpoint's
    # tokenizer has one); a dataset's own setting wins. `tokenizer` renders prompts for a served model.
    chat: ChatSetting = "auto"
    system: str | None = None
    tokenizer: Path | None = None
    seed: int = 0
    bootstrap_resamples: Annotated[int, Field(ge=0)] = 1000
    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]
    training_health: TrainingHealth | None = None
    forgetting: ForgettingOptions = Field(default_factory=lambda: ForgettingOptions())
    gates: dict[str, Gate] = Field(default_factory=dict)
    allow_incomplete: bool = False

    def health_datasets(self) -> list[DatasetSpec]:
        """The measured-gap texts as perplexity datasets scored with ``token_loss``."""
        health = self.training_health
        if health is None or health.train_sample is None or health.validation is None:
            return []
        return [
            DatasetSpec(
                name=name,
                path=sample.path,
                kind="perplexity",
                prompt=sample.template,
                limit=sample.limit,
                split=sample.split,
                metrics=["token_loss"],
            )
            for name, sample in zip(HEALTH_DATASETS, (health.train_sample, health.validation), strict=True)
        ]

    def all_datasets(self) -> list[DatasetSpec]:
        """The suite's datasets followed by its measured-gap texts."""
        return [*self.datasets, *self.health_datasets()]

    def general_datasets(self) -> list[DatasetSpec]:
        """The datasets marked ``general: true``: what forgetting is measured on."""
        return [spec for spec in self.datasets if spec.general]

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[DatasetSpec]) -> list[DatasetSpec]:
        seen: set[str] = set()
        for spec in datasets:
            if spec.name in seen:
                raise ValueError(f"dataset name {spec.name!r} appears twice")
            if spec.name in HEALTH_DATASETS:
                raise ValueError(f"dataset name {spec.name!r} is reserved for training_health's texts")
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
