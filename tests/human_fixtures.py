"""Stored runs for the human-evaluation tests: written straight to the database, no model involved."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from posteval.db.engine import session_scope
from posteval.db.models import Checkpoint, Dataset, EvalRun, ExampleScore, Metric, Prediction, Suite
from posteval.inputs.data import load_dataset
from posteval.inputs.suite import parse_suite

SUITE = """\
name: human
allow_incomplete: true
datasets:
  - name: qa
    path: qa.jsonl
    prompt: "Q: {q}"
    reference: a
    metrics: [exact_match]
"""
RUBRIC = """\
    judge:
      model: openai:judge@http://127.0.0.1:1
      rubric: {criteria: [helpful, correct], scale: [1, 2, 3]}
"""
CONFIG_HASH = "c" * 64


@dataclass(frozen=True)
class StoredRun:
    """A stored run and what it holds: id, the dataset's example keys and the run's outputs by key."""

    id: str
    keys: list[str]
    outputs: dict[str, str]


def store_run(
    url: str, folder: Path, outputs: dict[str, str] | None = None, *, n: int = 6, source: str | None = None
) -> StoredRun:
    """A succeeded run of a fresh checkpoint on ``folder/qa.jsonl`` (``n`` rows): its outputs and an
    exact_match metric. ``source`` is the suite text stored with it (it may name a judge's rubric)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "qa.jsonl"
    if not data.exists():
        data.write_text(
            "".join(json.dumps({"q": f"question {i}", "a": f"answer {i}"}) + "\n" for i in range(n))
        )
    suite, fingerprint = parse_suite(source or SUITE, folder / "suite.yaml")
    loaded = load_dataset(suite.datasets[0])
    token = uuid.uuid4().hex
    outputs = outputs or {key: f"output {token[:6]} {key}" for key in loaded.keys}
    with session_scope(url) as session:
        checkpoint = Checkpoint(fingerprint=token, path=str(folder / token), model_name="m")
        stored_suite = session.query(Suite).filter_by(fingerprint=fingerprint).one_or_none() or Suite(
            name="human", fingerprint=fingerprint, source_text=source or SUITE
        )
        dataset = session.query(Dataset).filter_by(
            name="qa", fingerprint=loaded.fingerprint
        ).one_or_none() or (
            Dataset(name="qa", fingerprint=loaded.fingerprint, row_count=len(loaded), path=str(data))
        )
        session.add_all([checkpoint, stored_suite, dataset])
        session.flush()
        run = EvalRun(
            checkpoint_id=checkpoint.id,
            suite_id=stored_suite.id,
            model_name="m",
            trigger="cli",
            status="succeeded",
            idempotency_key=token,
            output_settings={
                "datasets": {"qa": {"config_hash": CONFIG_HASH}},
                "statistics": {"seed": 0, "bootstrap_resamples": 200},
            },
        )
        session.add(run)
        session.flush()
        session.add(
            Metric(
                run_id=run.id,
                dataset_id=dataset.id,
                name="exact_match",
                value=0.0,
                n=len(loaded),
                higher_is_better=True,
                signature="metric:exact_match",
            )
        )
        session.add_all(
            Prediction(
                checkpoint_fingerprint=token,
                dataset_fingerprint=loaded.fingerprint,
                config_hash=CONFIG_HASH,
                example_key=key,
                output=output,
            )
            for key, output in outputs.items()
        )
        return StoredRun(run.id, list(loaded.keys), outputs)


def store_judge_scores(url: str, run_id: str, metric: str, scores: dict[str, float]) -> None:
    """Per-example judge scores as issue 18's judged metrics store them: a metric row and its scores."""
    with session_scope(url) as session:
        dataset_id = session.query(Metric).filter_by(run_id=run_id).first().dataset_id  # type: ignore[union-attr]
        session.add(
            Metric(
                run_id=run_id,
                dataset_id=dataset_id,
                name=metric,
                value=0.0,
                n=len(scores),
                higher_is_better=True,
                signature=f"metric:{metric}",
            )
        )
        session.flush()
        session.add_all(
            ExampleScore(run_id=run_id, dataset_id=dataset_id, metric=metric, example_key=k, value=v)
            for k, v in scores.items()
        )
