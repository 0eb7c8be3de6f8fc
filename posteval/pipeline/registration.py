"""Run registration: claiming the run for this delivery (or finding it finished) and the heartbeat that
keeps the claim alive while the flow works.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from posteval import timing
from posteval.db import claims, repo
from posteval.db.engine import session_scope
from posteval.db.models import EvalRun, utcnow
from posteval.db.retry import retry_transient
from posteval.errors import RunnerError, short_error
from posteval.hashing import sha256_json
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import LoadedSuite
from posteval.pipeline.datasets import DatasetRef
from posteval.pipeline.identity import idempotency_key, run_settings
from posteval.settings import get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRef:
    """The run a flow works on, whether an earlier delivery already finished it, and this delivery's claim."""

    run_id: str
    created: bool
    status: str
    claim_id: str | None = None


@timing.timed("database writes")
def register_run(
    checkpoint: CheckpointInfo,
    suite: LoadedSuite,
    datasets: Sequence[DatasetRef],
    *,
    trigger: str,
    flow_run_id: str | None = None,
    force: bool = False,
    base: CheckpointInfo | None = None,
    database_url: str | None = None,
    claim_id: str | None = None,
    holder_finished: Callable[[str], bool | None] | None = None,
) -> RunRef:
    """Create (or find) the run row and claim it (-> running), unless an earlier delivery succeeded.

    A run held by another delivery is taken over when that holder is gone: its heartbeat is older than
    the lease (POSTEVAL_RUN_LEASE_S), its process on this host no longer exists, or ``holder_finished``
    (the flow layer asks Prefect) says its flow run ended. ``claim_id`` identifies this delivery; a
    retried claim with the same id succeeds again instead of finding the run busy.
    """
    key = idempotency_key(checkpoint, suite, datasets)
    if force:
        key = sha256_json([key, utcnow().isoformat()])
    claim = claim_id or uuid.uuid4().hex
    lease = get_settings().run_lease_s

    def claim_it() -> RunRef:
        with session_scope(database_url) as session:
            base_id = None if base is None else repo.upsert_checkpoint(session, base).id
            ckpt = repo.upsert_checkpoint(session, checkpoint, base_id)
            has_step = checkpoint.training_step is not None
            suite_row = repo.upsert_suite(session, suite.suite.name, suite.fingerprint, suite.source_text)
            run, created = claims.get_or_create_run(
                session,
                checkpoint_id=ckpt.id,
                suite_id=suite_row.id,
                model_name=checkpoint.model_name,
                trigger=trigger,
                idempotency_key=key,
                flow_run_id=flow_run_id,
                checkpoint_path=checkpoint.location,
                # a folder without a step (a final save_model()) holding known weights: their step
                training_step=checkpoint.training_step if has_step else ckpt.training_step,
            )
            if run.output_settings is None:
                stored = run_settings(checkpoint, suite.suite, datasets)
                run.output_settings, run.config_hash = stored, sha256_json(stored)
            if run.status == "succeeded":
                return RunRef(run.id, created, run.status)
            holder_gone = run.status == "running" and _holder_gone(run, holder_finished)
            claimed = claims.claim_run(
                session,
                run.id,
                claim,
                flow_run_id=flow_run_id,
                claimed_by=claims.holder(),
                stale_before=utcnow() - timedelta(seconds=lease),
                take_over=holder_gone,
            )
            if not claimed:
                beat = run.heartbeat_at or run.started_at
                raise RunnerError(
                    f"run {run.id} of this checkpoint and suite is already being evaluated "
                    f"(flow run {run.flow_run_id}) by {run.claimed_by or 'an unknown process'}, last "
                    f"heartbeat {beat:%Y-%m-%d %H:%M:%S}; it is taken over once silent for {lease:g}s, "
                    f"or now after `posteval runs reset {run.id[:12]}`"
                )
            return RunRef(run.id, created, "running", claim)

    return retry_transient(claim_it, "registering the run")


def _holder_gone(run: EvalRun, holder_finished: Callable[[str], bool | None] | None) -> bool:
    """Whether the delivery holding ``run`` is known dead: its process on this host is gone, or its
    flow run ended (Crashed, Cancelled, or any final state) while the run still says running."""
    place, _, pid = (run.claimed_by or "").rpartition(":")
    if place == claims.here() and pid.isdigit() and int(pid) != os.getpid():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
    if holder_finished is not None and run.flow_run_id:
        return holder_finished(run.flow_run_id) is True
    return False


@contextmanager
def heartbeat(run: RunRef, *, database_url: str | None = None) -> Iterator[None]:
    """Beat the run's heartbeat every lease/4 seconds from a background thread while the block runs."""
    if run.claim_id is None:
        yield
        return
    claim_id = run.claim_id
    interval = get_settings().run_lease_s / 4
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with session_scope(database_url) as session:
                    if not claims.heartbeat(session, run.run_id, claim_id):
                        log.warning("run %s is no longer held by this delivery", run.run_id)
                        return
            except Exception as exc:  # a missed beat is retried at the next interval
                log.warning("heartbeat of run %s failed: %s", run.run_id, short_error(exc))

    thread = threading.Thread(target=beat, name=f"posteval-heartbeat-{run.run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
