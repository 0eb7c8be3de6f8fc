"""Run bookkeeping: register the run, persist its results, or mark it failed.

No Prefect retries here: a blind retry of a status change is how a late attempt could overwrite a newer
outcome. Transient database errors are retried inside the pipeline functions instead, and every status
change is guarded by the run's claim, so running any of these twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import LoadedSuite
from posteval.judging.forgetting import ForgettingReport
from posteval.judging.health import HealthReport


@task(name="register-run", cache_policy=NO_CACHE)
def register_run_task(
    checkpoint: CheckpointInfo,
    suite: LoadedSuite,
    datasets: Sequence[pipeline.DatasetRef],
    trigger: str,
    flow_run_id: str | None,
    force: bool,
    base: CheckpointInfo | None,
    database_url: str | None,
    claim_id: str | None = None,
) -> pipeline.RunRef:
    """Create or find the run row (idempotent on content) and claim it (-> running)."""
    return pipeline.register_run(
        checkpoint,
        suite,
        datasets,
        trigger=trigger,
        flow_run_id=flow_run_id,
        force=force,
        base=base,
        database_url=database_url,
        claim_id=claim_id,
        holder_finished=flow_run_finished,
    )


def flow_run_finished(flow_run_id: str) -> bool | None:
    """Whether the flow run ``flow_run_id`` is in a final state (Crashed, Cancelled, Failed, Completed);
    None when this Prefect API does not know it (another temporary server) or cannot be asked."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # unknown here, unreachable, or not a UUID: the heartbeat lease decides
        return None
    return None if state is None else state.is_final()


@task(name="persist-results", cache_policy=NO_CACHE)
def persist_task(
    run_id: str,
    outcomes: Sequence[pipeline.DatasetOutcome],
    warnings: Sequence[str],
    health: HealthReport | None,
    forgetting: ForgettingReport | None,
    database_url: str | None,
    claim_id: str | None = None,
) -> None:
    """Write metrics, per-example scores and health reports and mark the run succeeded, in one transaction."""
    pipeline.persist(
        run_id,
        outcomes,
        warnings,
        health=health,
        forgetting=forgetting,
        database_url=database_url,
        claim_id=claim_id,
    )


@task(name="mark-failed", cache_policy=NO_CACHE)
def mark_failed_task(run_id: str, error: str, database_url: str | None, claim_id: str | None = None) -> bool:
    """Record the failure on the run row, if this delivery still holds the run."""
    return pipeline.fail(run_id, error, database_url=database_url, claim_id=claim_id)
