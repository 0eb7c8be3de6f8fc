"""Queries over past runs, returned as pandas DataFrames (the CLI's listings and the Python API)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.db.lineage import in_lineage_order
from posteval.db.models import (
    GATE_STATUSES,
    Checkpoint,
    Dataset,
    EvalRun,
    HealthReport,
    LossPoint,
    Metric,
    RunDetail,
    Suite,
    TriggerFailure,
)
from posteval.db.reads import RUN_PATH, RUN_STEP
from posteval.errors import InputError

if TYPE_CHECKING:  # pandas is imported by the functions that build a frame: the flow's gate needs none
    import pandas as pd

RUN_COLUMNS = [
    "run_id",
    "model",
    "checkpoint",
    "step",
    "suite",
    "trigger",
    "status",
    "gate",
    "created_at",
    "started_at",
    "finished_at",
    "error",
]
METRIC_COLUMNS = ["dataset", "name", "value", "ci_low", "ci_high", "n", "higher_is_better"]


def runs(
    *,
    model: str | None = None,
    suite: str | None = None,
    status: str | None = None,
    gate: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    database_url: str | None = None,
) -> pd.DataFrame:
    """Runs, newest first, optionally filtered by model name, suite name, status, regression-gate outcome
    (``passed``, ``failed``, ``no_baseline``, ``incomparable``) and creation time.

    Failed runs include triggered flow runs that failed before a run row could exist (trigger failures:
    their id is the failure record's, their suite the path the event named; a suite or gate filter
    leaves them out, since no suite could be read and no gate ran).

    ``gate`` is the stored gate outcome (None for a run never gated: not succeeded, or gated before 0003).
    """
    if gate is not None and gate not in GATE_STATUSES:
        raise InputError(f"gate {gate!r}: expected one of {', '.join(GATE_STATUSES)}")
    query = (
        select(
            EvalRun.id,
            EvalRun.model_name,
            RUN_PATH,
            RUN_STEP,
            Suite.name,
            EvalRun.trigger,
            EvalRun.status,
            EvalRun.gate_status,
            EvalRun.created_at,
            EvalRun.started_at,
            EvalRun.finished_at,
            EvalRun.error,
        )
        .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .order_by(EvalRun.created_at.desc())
        .limit(limit)
    )
    if model:
        query = query.where(EvalRun.model_name == model)
    if suite:
        query = query.where(Suite.name == suite)
    if status:
        query = query.where(EvalRun.status == status)
    if gate:
        query = query.where(EvalRun.gate_status == gate)
    if since:
        query = query.where(EvalRun.created_at >= since)
    with session_scope(database_url) as session:
        rows = [tuple(r) for r in session.execute(query).all()]
        if status in (None, "failed") and not suite and not gate:
            rows += _trigger_failures(session, model, since, limit)
    rows.sort(key=lambda row: _aware(row[RUN_COLUMNS.index("created_at")]), reverse=True)
    import pandas as pd

    return pd.DataFrame(rows[:limit], columns=RUN_COLUMNS)


def _aware(when: datetime) -> datetime:
    """SQLite hands back naive UTC times, PostgreSQL aware ones: one order for both."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _trigger_failures(
    session: Session, model: str | None, since: datetime | None, limit: int
) -> list[tuple[Any, ...]]:
    """Triggered flow runs that failed before a run row existed, as rows of :func:`runs` (status failed,
    trigger event, the suite as the path the event named)."""
    query = select(TriggerFailure).order_by(TriggerFailure.created_at.desc()).limit(limit)
    if model:
        query = query.where(TriggerFailure.model_name == model)
    if since:
        query = query.where(TriggerFailure.created_at >= since)
    rows = []
    for failure in session.scalars(query):
        row = {
            "run_id": failure.id,
            "model": failure.model_name or "",
            "checkpoint": failure.checkpoint,
            "step": failure.step,
            "suite": failure.suite,
            "trigger": "event",
            "status": "failed",
            "created_at": failure.created_at,
            "finished_at": failure.created_at,
            "error": failure.error,
        }
        rows.append(tuple(row.get(column) for column in RUN_COLUMNS))  # a column it lacks is empty
    return rows


def resolve_run_id(prefix: str, *, database_url: str | None = None) -> str:
    """The full id of the run whose id starts with ``prefix`` (at least 4 characters, unambiguous).

    An unknown id is refused with the closest known ones (:func:`posteval.db.reads.full_run_id`).
    """
    with session_scope(database_url) as session:
        return reads.full_run_id(session, prefix)


def interrupted_run(*, database_url: str | None = None) -> str | None:
    """The run this process last marked failed as interrupted, if any (for the CLI's one-line report)."""
    from posteval.db.claims import holder

    with session_scope(database_url) as session:
        query = (
            select(EvalRun.id)
            .where(EvalRun.claimed_by == holder(), EvalRun.status == "failed", EvalRun.error == "interrupted")
            .order_by(EvalRun.finished_at.desc())
            .limit(1)
        )
        return session.scalars(query).first()


def run_metrics(run_id: str, *, database_url: str | None = None) -> pd.DataFrame:
    """The metric rows of one run (an id or a unique prefix, as the CLI takes): dataset, name, value,
    ci_low, ci_high, n, higher_is_better. An unknown or ambiguous id is refused naming it."""
    run_id = resolve_run_id(run_id, database_url=database_url)
    query = (
        select(
            Dataset.name,
            Metric.name,
            Metric.value,
            Metric.ci_low,
            Metric.ci_high,
            Metric.n,
            Metric.higher_is_better,
        )
        .join(Dataset, Metric.dataset_id == Dataset.id)
        .where(Metric.run_id == run_id)
        .order_by(Metric.id)
    )
    with session_scope(database_url) as session:
        rows = session.execute(query).all()
    import pandas as pd

    return pd.DataFrame([tuple(r) for r in rows], columns=METRIC_COLUMNS)


def run_details(run_id: str, *, database_url: str | None = None) -> list[dict[str, Any]]:
    """The run's reports (confusion matrix, per-class table...): dataset, name, n, signature, details."""
    run_id = resolve_run_id(run_id, database_url=database_url)
    query = (
        select(Dataset.name, RunDetail.name, RunDetail.n, RunDetail.signature, RunDetail.details)
        .join(Dataset, RunDetail.dataset_id == Dataset.id)
        .where(RunDetail.run_id == run_id)
        .order_by(RunDetail.id)
    )
    with session_scope(database_url) as session:
        rows = session.execute(query).all()
    return [
        {"dataset": d, "name": name, "n": n, "signature": signature, "details": details or {}}
        for d, name, n, signature, details in rows
    ]


def run_summary(run_id: str, *, database_url: str | None = None) -> dict[str, object]:
    """One run's row as a dict (model, checkpoint, suite, status, times, error, warnings, gate); ``run_id``
    is an id or a unique prefix."""
    run_id = resolve_run_id(run_id, database_url=database_url)
    query = (
        select(EvalRun, Checkpoint, Suite)
        .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .where(EvalRun.id == run_id)
    )
    with session_scope(database_url) as session:
        found = session.execute(query).first()
        if found is None:
            raise InputError(f"no run with id {run_id!r}")
        run, ckpt, suite = found
        return {
            "run_id": run.id,
            "model": run.model_name,
            "checkpoint": run.checkpoint_path or ckpt.path,
            "checkpoint_fingerprint": ckpt.fingerprint,
            "step": ckpt.training_step if run.training_step is None else run.training_step,
            "suite": suite.name,
            "trigger": run.trigger,
            "status": run.status,
            "created_at": run.created_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "error": run.error,
            "warnings": list(run.warnings or []),
            "flow_run_id": run.flow_run_id,
            "checkpoint_id": ckpt.id,
            "baseline_run_id": run.baseline_run_id,
            "gate_status": run.gate_status,
            "gate_summary": run.gate_summary,
        }


def run_health(run_id: str, *, database_url: str | None = None) -> dict[str, dict[str, object]]:
    """The run's health reports by kind (overfitting, forgetting): verdict, reason and details; ``run_id``
    is an id or a unique prefix."""
    with session_scope(database_url) as session:
        run_id = reads.full_run_id(session, run_id)
        rows = session.scalars(select(HealthReport).where(HealthReport.run_id == run_id)).all()
        return {r.kind: {"verdict": r.verdict, "reason": r.reason, "details": r.details} for r in rows}


def loss_curve(checkpoint_id: int, *, database_url: str | None = None) -> pd.DataFrame:
    """A checkpoint's logged losses: step, split (train or eval), value; ordered by split and step."""
    query = (
        select(LossPoint.step, LossPoint.split, LossPoint.value)
        .where(LossPoint.checkpoint_id == checkpoint_id)
        .order_by(LossPoint.split, LossPoint.step)
    )
    with session_scope(database_url) as session:
        rows = session.execute(query).all()
    import pandas as pd

    return pd.DataFrame([tuple(r) for r in rows], columns=["step", "split", "value"])


HISTORY_COLUMNS = [
    "run_id",
    "model",
    "step",
    "created_at",
    "suite",
    "dataset",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
]


def metric_history(
    metric: str,
    *,
    model: str,
    dataset: str | None = None,
    suite: str | None = None,
    since: datetime | None = None,
    database_url: str | None = None,
) -> pd.DataFrame:
    """One metric of one model across its succeeded runs, in lineage order (training step, then time).

    A metric never recorded for the model is refused with the metrics that were.
    """
    query = (
        select(
            EvalRun.id,
            EvalRun.model_name,
            RUN_STEP,
            EvalRun.created_at,
            Suite.name,
            Dataset.name,
            Metric.name,
            Metric.value,
            Metric.ci_low,
            Metric.ci_high,
            Metric.n,
        )
        .join(EvalRun, Metric.run_id == EvalRun.id)
        .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .join(Dataset, Metric.dataset_id == Dataset.id)
        .where(Metric.name == metric, EvalRun.model_name == model, EvalRun.status == "succeeded")
        # Narrowing metrics to the model's runs first lets SQLite start from the model, not the metric.
        .where(Metric.run_id.in_(select(EvalRun.id).where(EvalRun.model_name == model)))
    )
    if dataset:
        query = query.where(Dataset.name == dataset)
    if suite:
        query = query.where(Suite.name == suite)
    if since:
        query = query.where(EvalRun.created_at >= since)
    with session_scope(database_url) as session:
        rows = session.execute(query).all()
        if not rows:
            recorded = session.scalars(
                select(Metric.name)
                .distinct()
                .join(EvalRun, Metric.run_id == EvalRun.id)
                .join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
                .where(EvalRun.model_name == model)
            ).all()
    if not rows:
        if not recorded:
            raise InputError(f"no runs of model {model!r} are recorded")
        where = "".join(f" {k} {v!r}" for k, v in (("on dataset", dataset), ("in suite", suite)) if v)
        raise InputError(
            f"metric {metric!r} was never recorded for model {model!r}{where}; "
            f"recorded: {', '.join(sorted(recorded))}"
        )
    import pandas as pd

    frame = pd.DataFrame([tuple(r) for r in rows], columns=HISTORY_COLUMNS)
    return in_lineage_order(frame)
