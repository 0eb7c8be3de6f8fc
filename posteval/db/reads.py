"""The named reads the judging and views layers make inside a caller's session, one implementation each.

Each takes an open session (the caller's ``session_scope``, so several reads share one transaction) and
returns plain rows, ORM rows or a small dataclass; none of them writes. Reads that open their own session
and return DataFrames for the CLI and the Python API are in :mod:`posteval.db.queries`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from posteval.db.models import (
    Baseline,
    Checkpoint,
    Dataset,
    EvalRun,
    ExampleScore,
    ExampleStats,
    HumanLabel,
    Metric,
    Prediction,
    Suite,
)
from posteval.errors import InputError

# The checkpoint path and training step a run was evaluated at (the run's own, else its checkpoint's for
# rows written without them). Every read that shows a run's checkpoint uses these, never Checkpoint.path.
RUN_PATH = func.coalesce(EvalRun.checkpoint_path, Checkpoint.path)
RUN_STEP = func.coalesce(EvalRun.training_step, Checkpoint.training_step)


@dataclass(frozen=True)
class RunRow:
    """One run as comparisons and baselines read it."""

    model: str
    status: str
    suite: str
    step: int | None
    created_at: datetime
    output_settings: dict[str, Any] | None


def stored_config_hash(output_settings: dict[str, Any] | None, dataset: str) -> str | None:
    """The config hash a run stored for ``dataset`` in its output settings (the outputs it scored); None
    for a run stored before migration 0005 or a dataset it did not evaluate."""
    datasets = (output_settings or {}).get("datasets")
    entry = datasets.get(dataset) if isinstance(datasets, dict) else None
    found = entry.get("config_hash") if isinstance(entry, dict) else None
    return str(found) if found is not None else None


def run_row(session: Session, run_id: str) -> RunRow:
    """The run ``run_id`` (a full id); an unknown id is refused."""
    found = session.execute(
        select(
            EvalRun.model_name,
            EvalRun.status,
            Suite.name,
            RUN_STEP,
            EvalRun.created_at,
            EvalRun.output_settings,
        )
        .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .where(EvalRun.id == run_id)
    ).first()
    if found is None:
        raise InputError(f"no run with id {run_id!r}")
    return RunRow(*found)


def full_run_id(session: Session, prefix: str) -> str:
    """The full id of the run whose id starts with ``prefix`` (at least 4 characters, unambiguous): what
    the CLI and every Python API function that takes a run id accept. An unknown id is refused with the
    closest known ones, an ambiguous one with its matches."""
    # autoescape: '%' and '_' in a prefix are literal characters, not LIKE wildcards
    query = (
        select(EvalRun.id).where(EvalRun.id.startswith(prefix, autoescape=True)).order_by(EvalRun.id).limit(6)
    )
    matches = session.scalars(query).all()
    if len(matches) == 1 and len(prefix) >= 4:
        return matches[0]
    if not matches:
        known = session.scalars(select(EvalRun.id).order_by(EvalRun.created_at.desc()).limit(1_000)).all()
        close = difflib.get_close_matches(prefix, [k[: len(prefix)] for k in known], n=3, cutoff=0.3)
        nearest = [k for c in close for k in known if k.startswith(c)][:3]
        hint = f"; closest: {', '.join(k[:12] for k in nearest)}" if nearest else ""
        raise InputError(f"no run with id {prefix!r}{hint} (`posteval runs list` shows the recent ones)")
    if len(prefix) < 4:
        raise InputError(f"run id prefix {prefix!r} is too short: give at least 4 characters")
    raise InputError(f"run id {prefix!r} is ambiguous: it matches {', '.join(matches)}")


def run_outputs_key(session: Session, run_id: str) -> tuple[str, dict[str, Any] | None] | None:
    """The run's checkpoint fingerprint and stored output settings (which outputs it scored), if stored."""
    found = session.execute(
        select(Checkpoint.fingerprint, EvalRun.output_settings)
        .join(EvalRun, EvalRun.checkpoint_id == Checkpoint.id)
        .where(EvalRun.id == run_id)
    ).first()
    return None if found is None else (found[0], found[1])


def run_exists(session: Session, run_id: str) -> bool:
    """Whether a run with the full id ``run_id`` is stored."""
    return session.get(EvalRun, run_id) is not None


def suite_source(session: Session, run_id: str) -> str | None:
    """The suite text the run ``run_id`` stored."""
    return session.scalar(
        select(Suite.source_text).join(EvalRun, EvalRun.suite_id == Suite.id).where(EvalRun.id == run_id)
    )


def metric_rows(session: Session, run_id: str) -> list[tuple[Dataset, Metric]]:
    """The run's metric rows with their datasets, in the order they were stored."""
    rows = session.execute(
        select(Dataset, Metric)
        .join(Metric, Metric.dataset_id == Dataset.id)
        .where(Metric.run_id == run_id)
        .order_by(Metric.id)
    ).all()
    return [(dataset, metric) for dataset, metric in rows]


def example_scores(
    session: Session, run_id: str, *, dataset: str | None = None, metric: str | None = None
) -> list[tuple[str, str, str, float | None]]:
    """The run's per-example scores, optionally of one dataset and metric: (dataset, metric, key, value)."""
    query = (
        select(Dataset.name, ExampleScore.metric, ExampleScore.example_key, ExampleScore.value)
        .join(Dataset, ExampleScore.dataset_id == Dataset.id)
        .where(ExampleScore.run_id == run_id)
    )
    if metric is not None:
        query = query.where(ExampleScore.metric == metric)
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    return [(d, m, k, v) for d, m, k, v in session.execute(query).all()]


def example_details(session: Session, run_id: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The run's per-example details where a metric stored some (code outcomes): (dataset, metric, key,
    detail), in storage order."""
    rows = session.execute(
        select(Dataset.name, ExampleScore.metric, ExampleScore.example_key, ExampleScore.detail)
        .join(Dataset, ExampleScore.dataset_id == Dataset.id)
        .where(ExampleScore.run_id == run_id, ExampleScore.detail.is_not(None))
        .order_by(ExampleScore.id)
    ).all()
    return [(d, m, k, v) for d, m, k, v in rows if isinstance(v, dict)]


def example_stats(session: Session, run_id: str, dataset: str, metric: str) -> list[tuple[str, Any]]:
    """The run's per-example sufficient statistics of one corpus metric: (key, stats)."""
    rows = session.execute(
        select(ExampleStats.example_key, ExampleStats.stats)
        .join(Dataset, ExampleStats.dataset_id == Dataset.id)
        .where(ExampleStats.run_id == run_id, ExampleStats.metric == metric, Dataset.name == dataset)
    ).all()
    return [(k, v) for k, v in rows]


def predictions(
    session: Session, checkpoint_fingerprint: str, dataset_fingerprint: str
) -> list[tuple[str, str | None, str]]:
    """Stored outputs of a checkpoint on a dataset, oldest first: (example key, output, config hash)."""
    rows = session.execute(
        select(Prediction.example_key, Prediction.output, Prediction.config_hash)
        .where(
            Prediction.checkpoint_fingerprint == checkpoint_fingerprint,
            Prediction.dataset_fingerprint == dataset_fingerprint,
        )
        .order_by(Prediction.created_at, Prediction.id)
    ).all()
    return [(k, o, h) for k, o, h in rows]


def rendered_prompts(
    session: Session, checkpoint_fingerprint: str, dataset_fingerprint: str, config_hash: str
) -> dict[str, str]:
    """The rendered prompt (chat template, few-shot turns) stored with each output of one config, by key."""
    rows = session.execute(
        select(Prediction.example_key, Prediction.extra).where(
            Prediction.checkpoint_fingerprint == checkpoint_fingerprint,
            Prediction.dataset_fingerprint == dataset_fingerprint,
            Prediction.config_hash == config_hash,
        )
    ).all()
    return {key: str(extra["prompt"]) for key, extra in rows if isinstance(extra, dict) and "prompt" in extra}


def succeeded_runs(session: Session, model: str, suite: str) -> list[tuple[str, int, int | None, datetime]]:
    """Succeeded runs of ``model`` on the suite named ``suite``, newest first:
    (run id, checkpoint id, training step, run creation time)."""
    rows = session.execute(
        select(EvalRun.id, Checkpoint.id, RUN_STEP, EvalRun.created_at)
        .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .where(EvalRun.model_name == model, Suite.name == suite, EvalRun.status == "succeeded")
        .order_by(EvalRun.created_at.desc())
    ).all()
    return [(r, c, st, t) for r, c, st, t in rows]


def evaluated_checkpoints(session: Session) -> list[tuple[str, str, int | None, datetime]]:
    """Every run's checkpoint: (model name, checkpoint path, training step, run creation time)."""
    rows = session.execute(
        select(EvalRun.model_name, RUN_PATH, RUN_STEP, EvalRun.created_at).join(
            Checkpoint, EvalRun.checkpoint_id == Checkpoint.id
        )
    ).all()
    return [(m, p, st, t) for m, p, st, t in rows]


def model_suites(session: Session) -> dict[str, set[str]]:
    """The suite names each model (lineage) has runs of, any status: what the nightly run evaluates it on."""
    rows = session.execute(
        select(EvalRun.model_name, Suite.name).join(Suite, EvalRun.suite_id == Suite.id).distinct()
    ).all()
    found: dict[str, set[str]] = {}
    for model, suite in rows:
        found.setdefault(model, set()).add(suite)
    return found


def pinned_checkpoints(session: Session) -> list[tuple[str, str, str, int | None]]:
    """The checkpoint of every pinned baseline, pinned as a run or as a checkpoint:
    (model name, suite name, checkpoint path, training step)."""
    columns = (Baseline.model_name, Baseline.suite_name, Checkpoint.path, Checkpoint.training_step)
    of_run = (
        select(Baseline.model_name, Baseline.suite_name, RUN_PATH, RUN_STEP)
        .join(EvalRun, Baseline.run_id == EvalRun.id)
        .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
    )
    of_checkpoint = select(*columns).join(Checkpoint, Baseline.checkpoint_id == Checkpoint.id)
    rows = [*session.execute(of_run).all(), *session.execute(of_checkpoint).all()]
    return [(m, s, p, st) for m, s, p, st in rows]


def baseline_pin(session: Session, model: str, suite: str) -> Baseline | None:
    """The baseline pinned for ``model`` on ``suite``, if any."""
    return session.scalars(select(Baseline).filter_by(model_name=model, suite_name=suite)).first()


def pinned_baselines(session: Session) -> list[tuple[str, str, str | None, str | None, datetime]]:
    """Every pinned baseline by model and suite: (model, suite, run id, checkpoint path, pinned at)."""
    rows = session.execute(
        select(
            Baseline.model_name, Baseline.suite_name, Baseline.run_id, Checkpoint.path, Baseline.created_at
        )
        .outerjoin(Checkpoint, Baseline.checkpoint_id == Checkpoint.id)
        .order_by(Baseline.model_name, Baseline.suite_name)
    ).all()
    return [(m, s, r, p, t) for m, s, r, p, t in rows]


def checkpoint_id_at(session: Session, path: str) -> int | None:
    """The newest stored checkpoint at ``path`` (its latest sighting, or where a run evaluated it), if any."""
    found = session.scalars(
        select(Checkpoint.id).where(Checkpoint.path == path).order_by(Checkpoint.id.desc())
    ).first()
    if found is None:
        found = session.scalars(
            select(EvalRun.checkpoint_id)
            .where(EvalRun.checkpoint_path == path)
            .order_by(EvalRun.created_at.desc())
        ).first()
    return found


@dataclass(frozen=True)
class RunFingerprints:
    """What identifies a run's numbers: its config hash and the content fingerprints of its inputs."""

    config_hash: str | None
    checkpoint: str
    suite: str
    datasets: dict[str, str]  # dataset name -> fingerprint, of the datasets the run has metrics on


def run_fingerprints(session: Session, run_id: str) -> RunFingerprints:
    """The config hash and the checkpoint, suite and dataset fingerprints of the run ``run_id``."""
    found = session.execute(
        select(EvalRun.config_hash, Checkpoint.fingerprint, Suite.fingerprint)
        .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .where(EvalRun.id == run_id)
    ).first()
    if found is None:
        raise InputError(f"no run with id {run_id!r}")
    datasets = session.execute(
        select(Dataset.name, Dataset.fingerprint)
        .join(Metric, Metric.dataset_id == Dataset.id)
        .where(Metric.run_id == run_id)
        .distinct()
    ).all()
    return RunFingerprints(found[0], found[1], found[2], {name: fp for name, fp in sorted(datasets)})


def human_labels(
    session: Session, run_id: str, *, kind: str, dataset: str | None = None
) -> list[tuple[str, str, str, str, float, str | None]]:
    """The run's human labels of ``kind`` ("score" or "pair"), optionally of one dataset:
    (dataset, example key, rater, criterion, value, base run id)."""
    query = (
        select(
            Dataset.name,
            HumanLabel.example_key,
            HumanLabel.rater,
            HumanLabel.criterion,
            HumanLabel.value,
            HumanLabel.base_run_id,
        )
        .join(Dataset, HumanLabel.dataset_id == Dataset.id)
        .where(HumanLabel.run_id == run_id, HumanLabel.kind == kind)
        .order_by(HumanLabel.id)
    )
    if dataset is not None:
        query = query.where(Dataset.name == dataset)
    return [(d, k, r, c, v, b) for d, k, r, c, v, b in session.execute(query).all()]
