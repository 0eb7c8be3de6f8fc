"""What the run report reads besides queries: the stored suite, model outputs and the dataset rows.

Outputs are the Prediction rows of the run's checkpoint and dataset whose config hash is the one the run
stored for the dataset (its output settings, written when the run was registered): exactly what scoring
read, without loading a tokenizer or torch to compute it again. When the run stored none (runs from
before migration 0005) or it matches no row, the most recent output per example is used and a note says
so. Inputs and references come from the dataset file
at its stored path, only while its content fingerprint still matches the run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posteval.db import queries, reads
from posteval.db.engine import session_scope
from posteval.errors import PostevalError
from posteval.inputs.checkpoint import OPENAI_PREFIX, CheckpointInfo
from posteval.inputs.data import load_dataset
from posteval.inputs.suite import DatasetSpec, Suite, parse_suite

Examples = dict[str, tuple[str, Any]]  # example key -> (input text, reference)


@dataclass
class ReportRun:
    """One run as the report reads it: summary, stored suite, datasets, metric rows and checkpoint."""

    id: str
    url: str | None
    summary: dict[str, Any]
    suite: Suite | None
    datasets: dict[str, tuple[str, str]]  # name -> (fingerprint, stored path), in metric order
    metrics: list[tuple[str, str, bool, dict[str, Any]]]  # (dataset, metric, higher is better, details)
    checkpoint: CheckpointInfo
    reports: list[dict[str, Any]] = field(default_factory=list)  # the run's details (queries.run_details)
    settings: dict[str, Any] | None = None  # the run's stored output settings (pipeline.run_settings)
    _read: dict[str, tuple[Examples, str]] = field(default_factory=dict)

    def spec(self, dataset: str) -> DatasetSpec | None:
        """The dataset's spec in the stored suite, if the suite parses and names it."""
        return next((s for s in self.suite.all_datasets() if s.name == dataset), None) if self.suite else None

    def outputs(self, dataset: str) -> tuple[dict[str, str | None], str]:
        """Model outputs by example key, and a note when they could not be matched by config hash."""
        wanted = self._config_hash(dataset)
        spec = self.spec(dataset)
        with session_scope(self.url) as session:
            rows = reads.predictions(session, self.checkpoint.fingerprint, self.datasets[dataset][0])
        if spec is not None and spec.kind == "code":  # a code problem's first sample stands for it
            rows = [
                (key.removesuffix("#0"), output, chash) for key, output, chash in rows if key.endswith("#0")
            ]
        exact = {key: output for key, output, chash in rows if chash == wanted}
        if exact:
            return exact, ""
        latest = {key: output for key, output, _ in rows}  # later rows win: the most recent per key
        return latest, "outputs: none match the config hash the run stored; showing the latest"

    def _config_hash(self, dataset: str) -> str | None:
        """The config hash the run stored for ``dataset`` (runs stored before migration 0005 have none)."""
        return reads.stored_config_hash(self.settings, dataset)

    def examples(self, dataset: str) -> tuple[Examples, str]:
        """(input text, reference) by example key from the dataset file; or nothing, and why."""
        if dataset not in self._read:
            self._read[dataset] = self._load(dataset)
        return self._read[dataset]

    def _load(self, dataset: str) -> tuple[Examples, str]:
        fingerprint, path = self.datasets[dataset]
        spec = self.spec(dataset)
        if spec is None:
            return {}, "inputs and references not shown: the stored suite no longer parses"
        try:
            loaded = load_dataset(spec.model_copy(update={"path": Path(path)}))
        except PostevalError as exc:
            return {}, f"inputs and references not shown: {exc}"
        if loaded.fingerprint != fingerprint:
            return {}, f"inputs and references not shown: {path} changed since the run"
        texts = loaded.texts() if spec.kind == "perplexity" else loaded.prompts()
        wanted = self._config_hash(dataset)
        if wanted is not None:  # a chat template or few-shot turns: the prompt as the model saw it
            with session_scope(self.url) as session:
                rendered = reads.rendered_prompts(session, self.checkpoint.fingerprint, fingerprint, wanted)
            texts = [rendered.get(key, text) for key, text in zip(loaded.keys, texts, strict=True)]
        references = loaded.references or [None] * len(loaded)
        return dict(zip(loaded.keys, zip(texts, references, strict=True), strict=True)), ""


def _parse_quietly(source: str) -> Suite | None:
    """The stored suite text parsed again (its warnings were shown when it ran), or None if it fails."""
    suite_log = logging.getLogger("posteval.inputs.suite")
    suite_log.disabled, was = True, suite_log.disabled
    try:
        return parse_suite(source, Path("suite.yaml"))[0]
    except PostevalError:
        return None
    finally:
        suite_log.disabled = was


def load_run(run_id: str, url: str | None = None) -> ReportRun:
    """The run ``run_id`` (a full id) with its stored suite parsed and its datasets listed."""
    summary = queries.run_summary(run_id, database_url=url)
    with session_scope(url) as session:
        source = reads.suite_source(session, run_id)
        rows = reads.metric_rows(session, run_id)
        settings = reads.run_row(session, run_id).output_settings
    path = str(summary["checkpoint"])
    checkpoint = CheckpointInfo(
        path=Path(path),
        fingerprint=str(summary["checkpoint_fingerprint"]),
        model_name=str(summary["model"]),
        runner="openai" if path.startswith(OPENAI_PREFIX) else "hf",
    )
    datasets: dict[str, tuple[str, str]] = {}
    for dataset, _ in rows:
        datasets.setdefault(dataset.name, (dataset.fingerprint, dataset.path))
    metrics = [(d.name, m.name, m.higher_is_better, m.details or {}) for d, m in rows]
    reports = queries.run_details(run_id, database_url=url)
    return ReportRun(
        run_id, url, summary, _parse_quietly(source or ""), datasets, metrics, checkpoint, reports, settings
    )
