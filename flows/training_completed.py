"""The event-triggered flow: a ``posteval.training.completed`` payload in, the post-training flow run once."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

from prefect import flow, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from posteval import pipeline
from posteval.automation import require_fields, wait_for_checkpoint
from posteval.errors import short_error
from posteval.flows.post_training import evaluate_checkpoint
from posteval.pipeline import check_task_runner
from posteval.tasks.resolve import resolve_task

POLL_S = 2.0


def _same_target(run: FlowRun, checkpoint: str, suite: str) -> bool:
    return run.parameters.get("checkpoint") == checkpoint and run.parameters.get("suite") == suite


def earlier_duplicates(checkpoint: str, suite: str) -> list[FlowRun]:
    """Runs of this deployment for the same checkpoint and suite that started before this one, still running.

    Ordering by start time (then id) means two deliveries never wait for each other, on any number of
    workers: the later one waits, then finds the finished evaluation in the database.
    """
    run_id = flow_run.get_id()
    if run_id is None:
        return []
    with get_client(sync_client=True) as client:
        me = client.read_flow_run(UUID(run_id))
        if me.deployment_id is None:
            return []
        running = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[me.deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
    mine = (me.start_time, str(me.id))
    return [
        run
        for run in running
        if run.id != me.id
        and _same_target(run, checkpoint, suite)
        and run.start_time is not None
        and (run.start_time, str(run.id)) < mine
    ]


def wait_for_duplicates(checkpoint: str, suite: str) -> None:
    """Block while an earlier delivery of the same event is still evaluating."""
    logger = get_run_logger()
    while waiting := earlier_duplicates(checkpoint, suite):
        logger.info("waiting for the earlier delivery %s of the same checkpoint and suite", waiting[0].name)
        time.sleep(POLL_S)


@flow(name="posteval-training-completed", log_prints=False)
def on_training_completed(
    checkpoint: str | None = None,
    suite: str | None = None,
    model_name: str | None = None,
    step: int | None = None,
    base_model: str | None = None,
    database_url: str | None = None,
    wait_s: float | None = None,
    task_runner: str = "default",
    dask_address: str | None = None,
) -> str:
    """Evaluate the checkpoint a training job announced; returns the run id.

    Fails naming the field when the payload lacks the checkpoint or the suite, waits up to ``wait_s``
    (default POSTEVAL_CHECKPOINT_WAIT_S) for a folder still being written, and makes one run however
    often the event is delivered. ``base_model`` is the base of an adapter checkpoint; ``task_runner`` and
    ``dask_address`` go to the post-training flow (shard the model work over a Dask cluster).

    A failure before the run row exists (bad payload, suite or checkpoint, a folder that never completed)
    is recorded as a trigger failure linked to this flow run, so the history lists it with the failed runs;
    after that the post-training flow marks the run itself failed.
    """
    logger = get_run_logger()
    try:
        checkpoint, suite = require_fields(checkpoint, suite)
        check_task_runner(task_runner, dask_address)
        logger.info("checkpoint %s announced (suite %s)", checkpoint, suite)
        wait_for_checkpoint(checkpoint, timeout_s=wait_s)
        wait_for_duplicates(checkpoint, suite)
        adapter = base_model if base_model and (Path(checkpoint) / "adapter_config.json").is_file() else None
        resolved = resolve_task(checkpoint, suite, model_name, adapter, step)
    except BaseException as exc:
        _record_failure(exc, checkpoint, suite, model_name, step, database_url)
        raise
    info = resolved.checkpoint
    logger.info("training of %s completed at step %s: %s", info.model_name, info.training_step, info.location)
    return evaluate_checkpoint(
        checkpoint=checkpoint,
        suite=suite,
        trigger="event",
        model_name=model_name,
        database_url=database_url,
        adapter_base=adapter,
        task_runner=task_runner,
        dask_address=dask_address,
        step=step,
        resolved=resolved,
    )


def _record_failure(
    exc: BaseException,
    checkpoint: str | None,
    suite: str | None,
    model_name: str | None,
    step: int | None,
    database_url: str | None,
) -> None:
    """Keep the failed trigger in the history; a database that cannot take it is logged, never raised over
    the original error."""
    logger = get_run_logger()
    try:
        pipeline.record_trigger_failure(
            short_error(exc),
            flow_run_id=flow_run.get_id(),
            checkpoint=checkpoint,
            suite=suite,
            model_name=model_name,
            step=step,
            database_url=database_url,
        )
    except Exception as recording:  # the original failure matters more than its record
        logger.warning("could not record the failed trigger in the database: %s", short_error(recording))
