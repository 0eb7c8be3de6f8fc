"""Run bookkeeping: register the run, persist its results, or mark it failed."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.checkpoint import CheckpointInfo
from posteval.forgetting import ForgettingReport
from posteval.health import HealthReport
from posteval.suite import LoadedSuite


@task(name="register-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def register_run_task(
    checkpoint: CheckpointInfo,
    suite: LoadedSuite,
    datasets: Sequence[pipeline.DatasetRef],
    trigger: str,
    flow_run_id: str | None,
    force: bool,
    base: CheckpointInfo | None,
    database_url: str | None,
) -> pipeline.RunRef:
    """Create or find the run row (idempotent on content) and move it to running."""
    return pipeline.register_run(
        checkpoint,
        suite,
        datasets,
        trigger=trigger,
        flow_run_id=flow_run_id,
        force=force,
        base=base,
        database_url=database_url,
    )


@task(name="persist-results", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def persist_task(
    run_id: str,
    outcomes: Sequence[pipeline.DatasetOutcome],
    warnings: Sequence[str],
    health: HealthReport | None,
    forgetting: ForgettingReport | None,
    database_url: str | None,
) -> None:
    """Write metrics, per-example scores and health reports and mark the run succeeded, in one transaction."""
    pipeline.persist(
        run_id, outcomes, warnings, health=health, forgetting=forgetting, database_url=database_url
    )


@task(name="mark-failed", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def mark_failed_task(run_id: str, error: str, database_url: str | None) -> None:
    """Record the failure on the run row."""
    pipeline.fail(run_id, error, database_url=database_url)
