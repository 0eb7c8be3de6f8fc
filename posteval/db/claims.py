"""Run claims: which delivery works on a run (claim_id), where its holder lives, its heartbeat, and the
guarded status changes (failed, reset) that only the current holder, or an operator, may make. Like every
repository function these flush and never commit.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from posteval.db.models import (
    EvalRun,
    ExampleScore,
    ExampleStats,
    HealthReport,
    Metric,
    RunDetail,
    utcnow,
)


def get_or_create_run(
    session: Session,
    *,
    checkpoint_id: int,
    suite_id: int,
    model_name: str,
    trigger: str,
    idempotency_key: str,
    flow_run_id: str | None,
    checkpoint_path: str | None = None,
    training_step: int | None = None,
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
                checkpoint_path=checkpoint_path,
                training_step=training_step,
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
