"""Repository functions: they flush, never commit; the caller's session_scope commits at the edge."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from posteval.db.models import (
    Checkpoint,
    Dataset,
    EvalRun,
    ExampleScore,
    ExampleStats,
    HealthReport,
    LossPoint,
    Metric,
    Prediction,
    RunDetail,
    Suite,
    utcnow,
)
from posteval.errors import RunTakenOver
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.results import MetricResult, RunDetailResult


def _get_or_create(session: Session, model: type[Any], lookup: Mapping[str, Any], **values: Any) -> Any:
    """The row matching ``lookup``, inserted with ``values`` if absent; safe against a concurrent insert."""
    row = session.scalars(select(model).filter_by(**lookup)).first()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = model(**lookup, **values)
            session.add(row)
    except IntegrityError:
        row = session.scalars(select(model).filter_by(**lookup)).one()
    return row


def upsert_checkpoint(session: Session, info: CheckpointInfo, base_id: int | None = None) -> Checkpoint:
    """The checkpoint row for ``info`` (by fingerprint); its path and name follow the latest sighting."""
    row: Checkpoint = _get_or_create(
        session,
        Checkpoint,
        {"fingerprint": info.fingerprint},
        path=info.location,
        model_name=info.model_name,
        training_step=info.training_step,
        is_adapter=info.is_adapter,
        base_checkpoint_id=base_id,
    )
    row.path = info.location
    if base_id is not None:
        row.base_checkpoint_id = base_id
    return row


def upsert_suite(session: Session, name: str, fingerprint: str, source_text: str) -> Suite:
    """The suite row for ``fingerprint``."""
    row: Suite = _get_or_create(
        session, Suite, {"fingerprint": fingerprint}, name=name, source_text=source_text
    )
    return row


def upsert_dataset(session: Session, name: str, fingerprint: str, row_count: int, path: str) -> Dataset:
    """The dataset row for (name, fingerprint)."""
    row: Dataset = _get_or_create(
        session, Dataset, {"name": name, "fingerprint": fingerprint}, row_count=row_count, path=path
    )
    return row


def get_or_create_run(
    session: Session,
    *,
    checkpoint_id: int,
    suite_id: int,
    model_name: str,
    trigger: str,
    idempotency_key: str,
    flow_run_id: str | None,
) -> tuple[EvalRun, bool]:
    """The run for ``idempotency_key`` and whether it was created now (a re-delivered trigger finds it)."""
    existing = session.scalars(select(EvalRun).filter_by(idempotency_key=idempotency_key)).first()
    if existing is not None:
        return existing, False
    try:
        with session.begin_nested():
            run = EvalRun(
                checkpoint_id=checkpoint_id,
                suite_id=suite_id,
                model_name=model_name,
                trigger=trigger,
                status="pending",
                idempotency_key=idempotency_key,
                flow_run_id=flow_run_id,
                warnings=[],
            )
            session.add(run)
    except IntegrityError:
        return session.scalars(select(EvalRun).filter_by(idempotency_key=idempotency_key)).one(), False
    return run, True


def claim_run(
    session: Session,
    run_id: str,
    claim_id: str,
    *,
    flow_run_id: str | None = None,
    claimed_by: str | None = None,
    stale_before: datetime | None = None,
    take_over: bool = False,
) -> bool:
    """Move the run to running under ``claim_id``, atomically; False if a live holder has it.

    Claimable: a pending or failed run; a running run already under ``claim_id`` (a retried claim); a
    running run whose heartbeat is older than ``stale_before`` (its holder stopped beating); any running
    run when ``take_over`` (its holder is known dead). A succeeded run is never claimed.
    """
    claimable = EvalRun.status.in_(("pending", "failed")) | (
        (EvalRun.status == "running") & (EvalRun.claim_id == claim_id)
    )
    if take_over:
        claimable |= EvalRun.status == "running"
    elif stale_before is not None:
        beat = func.coalesce(EvalRun.heartbeat_at, EvalRun.started_at)
        claimable |= (EvalRun.status == "running") & ((beat < stale_before) | (beat.is_(None)))
    now = utcnow()
    claimed = session.execute(
        update(EvalRun)
        .where(EvalRun.id == run_id, claimable)
        .values(
            status="running",
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            error=None,
            flow_run_id=flow_run_id,
            claim_id=claim_id,
            claimed_by=claimed_by,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(claimed, "rowcount", 0))


def here() -> str:
    """Where process ids mean the same thing: the host name and, on Linux, the pid namespace (two
    containers may share a host name but never a pid namespace)."""
    try:
        return f"{socket.gethostname()}/pidns-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def holder() -> str:
    """This process as a run's holder, ``here():pid``: the lease's quick check that a holder still lives."""
    return f"{here()}:{os.getpid()}"


def _held(run_id: str, claim_id: str | None) -> Any:
    """The condition "the run is running under ``claim_id``" (any claim when None)."""
    held = (EvalRun.id == run_id) & (EvalRun.status == "running")
    return held if claim_id is None else held & (EvalRun.claim_id == claim_id)


def heartbeat(session: Session, run_id: str, claim_id: str) -> bool:
    """Record that the holder of ``claim_id`` is alive; False if the run is no longer held by it."""
    beat = session.execute(
        update(EvalRun)
        .where(_held(run_id, claim_id))
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(beat, "rowcount", 0))


def mark_failed(session: Session, run_id: str, error: str, claim_id: str | None = None) -> bool:
    """running -> failed with ``error``, only while the run is held by ``claim_id``; returns whether it
    changed. Any metrics or scores of the run are removed so nothing looks succeeded. A run that
    succeeded, or that another delivery took over, is left exactly as it is (a late retry is a no-op).
    """
    failed = session.execute(
        update(EvalRun)
        .where(_held(run_id, claim_id))
        .values(status="failed", finished_at=utcnow(), error=error, claim_id=None)
        .execution_options(synchronize_session=False)
    )
    if not getattr(failed, "rowcount", 0):
        return False
    for model in (ExampleScore, ExampleStats, Metric, RunDetail, HealthReport):
        session.execute(delete(model).where(model.run_id == run_id))
    return True


def reset_run(session: Session, run_id: str, reason: str) -> str:
    """An operator's reset: a pending or running run -> failed with ``reason``; returns the old status.

    The run's claim is dropped, so a holder that is still alive somewhere can no longer write its outcome;
    the next delivery claims the run and resumes from the stored outputs. Other statuses are unchanged.
    """
    run = session.get_one(EvalRun, run_id, with_for_update=True)
    previous = run.status
    if previous in ("pending", "running"):
        for model in (ExampleScore, ExampleStats, Metric, RunDetail, HealthReport):
            session.execute(delete(model).where(model.run_id == run_id))
        session.execute(
            update(EvalRun)
            .where(EvalRun.id == run_id)
            .values(status="failed", error=reason, finished_at=utcnow(), claim_id=None)
            .execution_options(synchronize_session=False)
        )
    return previous


@dataclass(frozen=True)
class StoredOutput:
    """A stored model output: the text (None for scored text) and its extra values (loglikelihoods)."""

    output: str | None
    extra: dict[str, Any]


def _cache_filter(checkpoint_fp: str, dataset_fp: str, config_hash: str) -> Any:
    return (
        (Prediction.checkpoint_fingerprint == checkpoint_fp)
        & (Prediction.dataset_fingerprint == dataset_fp)
        & (Prediction.config_hash == config_hash)
    )


def cached_keys(session: Session, checkpoint_fp: str, dataset_fp: str, config_hash: str) -> set[str]:
    """Example keys already stored for one (checkpoint, dataset, config)."""
    query = select(Prediction.example_key).where(_cache_filter(checkpoint_fp, dataset_fp, config_hash))
    return set(session.scalars(query))


def cached_outputs(
    session: Session, checkpoint_fp: str, dataset_fp: str, config_hash: str
) -> dict[str, StoredOutput]:
    """Stored outputs for one (checkpoint, dataset, config), by example key (columns only, no ORM rows)."""
    query = select(Prediction.example_key, Prediction.output, Prediction.extra).where(
        _cache_filter(checkpoint_fp, dataset_fp, config_hash)
    )
    return {key: StoredOutput(output, extra or {}) for key, output, extra in session.execute(query)}


def add_predictions(
    session: Session,
    checkpoint_fp: str,
    dataset_fp: str,
    config_hash: str,
    items: Iterable[tuple[str, str | None, dict[str, Any]]],
) -> None:
    """Store (example key, output, extra) triples for one (checkpoint, dataset, config), in one statement."""
    rows = [
        {
            "checkpoint_fingerprint": checkpoint_fp,
            "dataset_fingerprint": dataset_fp,
            "config_hash": config_hash,
            "example_key": key,
            "output": output,
            "extra": extra,
            "created_at": utcnow(),
        }
        for key, output, extra in items
    ]
    if rows:
        # Two workers may compute the same outputs (a shared base model): the first stored wins.
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = session.get_bind().dialect.name
        if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - posteval supports these two
            session.execute(insert(Prediction), rows)
            return
        statement = (
            postgresql.insert(Prediction).on_conflict_do_nothing()
            if dialect == "postgresql"
            else sqlite.insert(Prediction).on_conflict_do_nothing()
        )
        session.execute(statement, rows)


def save_results(
    session: Session,
    run_id: str,
    dataset_id: int,
    keys: Sequence[str],
    results: Sequence[MetricResult],
) -> None:
    """Metrics of one dataset with their per-example scores and statistics (in ``keys`` order)."""
    for result in results:
        session.add(
            Metric(
                run_id=run_id,
                dataset_id=dataset_id,
                name=result.name,
                value=None if math.isnan(result.value) else result.value,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                n=result.n,
                higher_is_better=result.higher_is_better,
                signature=result.signature,
                details=result.details,
                aggregation=result.aggregation,
            )
        )
    session.flush()  # the metric rows first: every score references its metric
    for result in results:
        if result.stats is not None and len(result.stats) == len(keys):
            session.add_all(
                ExampleStats(
                    run_id=run_id, dataset_id=dataset_id, metric=result.name, example_key=key, stats=row
                )
                for key, row in zip(keys, result.stats, strict=True)
            )
        if result.per_example is not None and len(result.per_example) == len(keys):
            session.add_all(
                ExampleScore(
                    run_id=run_id, dataset_id=dataset_id, metric=result.name, example_key=key, value=v
                )
                for key, v in zip(keys, result.per_example, strict=True)
            )
    session.flush()


def hold_for_persist(session: Session, run_id: str, claim_id: str | None) -> bool:
    """Lock the run for its final write; True to go on, False if it already succeeded under this claim
    (a retried persist whose first attempt committed). Raises RunTakenOver if the claim is lost."""
    run = session.get_one(EvalRun, run_id, with_for_update=True, populate_existing=True)
    if run.status == "succeeded" and claim_id is not None and run.claim_id == claim_id:
        return False
    if run.status != "running" or (claim_id is not None and run.claim_id != claim_id):
        raise RunTakenOver(
            f"run {run_id} is {run.status} and no longer held by this delivery; its outcome is left as is"
        )
    return True


def save_details(session: Session, run_id: str, dataset_id: int, details: Sequence[RunDetailResult]) -> None:
    """Reports of one dataset (confusion matrix, per-class table...) as the run's details."""
    session.add_all(
        RunDetail(
            run_id=run_id,
            dataset_id=dataset_id,
            name=detail.name,
            n=detail.n,
            signature=detail.signature,
            details=detail.details,
        )
        for detail in details
    )
    session.flush()


def mark_succeeded(session: Session, run_id: str, warnings: Sequence[str] = ()) -> None:
    """running -> succeeded (after :func:`hold_for_persist` checked the claim in the same transaction)."""
    run = session.get_one(EvalRun, run_id)
    run.status, run.finished_at, run.warnings = "succeeded", utcnow(), list(warnings)


def save_loss_points(session: Session, checkpoint_id: int, points: Iterable[tuple[int, str, float]]) -> int:
    """Store a checkpoint's (step, split, value) loss points once; returns how many were new."""
    rows = session.execute(
        select(LossPoint.split, LossPoint.step).where(LossPoint.checkpoint_id == checkpoint_id)
    )
    known = {(split, step) for split, step in rows}
    latest = {(split, step): value for step, split, value in points}  # a step logged twice: the last
    new = [
        LossPoint(checkpoint_id=checkpoint_id, step=step, split=split, value=value)
        for (split, step), value in latest.items()
        if (split, step) not in known
    ]
    session.add_all(new)
    session.flush()
    return len(new)


def save_health(
    session: Session, run_id: str, kind: str, verdict: str, reason: str, details: dict[str, Any]
) -> None:
    """Store (or replace) the run's ``kind`` health report."""
    session.execute(delete(HealthReport).where(HealthReport.run_id == run_id, HealthReport.kind == kind))
    session.add(HealthReport(run_id=run_id, kind=kind, verdict=verdict, reason=reason, details=details))
    session.flush()


def set_gate(session: Session, run_id: str, baseline_run_id: str | None, status: str, summary: str) -> None:
    """Record the run's baseline and regression-gate outcome."""
    run = session.get_one(EvalRun, run_id)
    run.baseline_run_id, run.gate_status, run.gate_summary = baseline_run_id, status, summary
