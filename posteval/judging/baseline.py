"""Lineage and baselines: which earlier run a new run is compared with.

Runs belong to a model (its name) and are ordered by lineage (posteval.db.lineage: the checkpoint's
training step, then the run's creation time). A run's
baseline is the pinned one for its model and suite (``posteval baseline set``) if any, else the
previous succeeded run of the same model and suite in that order.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import delete
from sqlalchemy.orm import Session

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.db.lineage import lineage_key
from posteval.db.models import Baseline
from posteval.errors import InputError


def _runs_of(session: Session, model: str, suite: str) -> list[tuple[str, int, int | None, datetime]]:
    """Succeeded runs of ``model`` on ``suite``: (run id, checkpoint id, step, run time), lineage order."""
    return sorted(reads.succeeded_runs(session, model, suite), key=lambda r: lineage_key(r[2], r[3]))


def baseline_for(run_id: str, *, database_url: str | None = None) -> str | None:
    """The run ``run_id`` (an id or a unique prefix) is compared with: the pinned baseline, else the
    previous run; None if neither."""
    with session_scope(database_url) as session:
        run_id = reads.full_run_id(session, run_id)
        found = reads.run_row(session, run_id)
        model, step, suite, created = found.model, found.step, found.suite, found.created_at
        runs = [r for r in _runs_of(session, model, suite) if r[0] != run_id]
        pinned = reads.baseline_pin(session, model, suite)
        if pinned is not None and pinned.run_id is not None and pinned.run_id != run_id:
            return pinned.run_id
        if pinned is not None and pinned.checkpoint_id is not None:
            of_checkpoint = [r for r in runs if r[1] == pinned.checkpoint_id]
            if of_checkpoint:
                return of_checkpoint[-1][0]
        earlier = [r for r in runs if lineage_key(r[2], r[3]) < lineage_key(step, created)]
        return earlier[-1][0] if earlier else None


def set_baseline(
    model: str,
    suite: str,
    *,
    run_id: str | None = None,
    checkpoint_path: str | None = None,
    database_url: str | None = None,
) -> None:
    """Pin the baseline of ``model`` on ``suite`` to a run, or to a checkpoint (by its stored path)."""
    if (run_id is None) == (checkpoint_path is None):
        raise InputError("pin either a run or a checkpoint, not both and not neither")
    with session_scope(database_url) as session:
        checkpoint_id = None
        if checkpoint_path is not None:
            checkpoint_id = reads.checkpoint_id_at(session, checkpoint_path)
            if checkpoint_id is None:
                raise InputError(f"no evaluated checkpoint at {checkpoint_path}; evaluate it first")
        elif run_id is not None:
            run_id = reads.full_run_id(session, run_id)
        session.execute(delete(Baseline).filter_by(model_name=model, suite_name=suite))
        session.add(Baseline(model_name=model, suite_name=suite, run_id=run_id, checkpoint_id=checkpoint_id))


def baselines(*, database_url: str | None = None) -> pd.DataFrame:
    """Every pinned baseline: model, suite, run id or checkpoint path, when it was pinned."""
    with session_scope(database_url) as session:
        rows = reads.pinned_baselines(session)
    return pd.DataFrame(
        [tuple(r) for r in rows], columns=["model", "suite", "run_id", "checkpoint", "pinned_at"]
    )
