"""Model stage: outputs for every example not yet stored, one task per dataset (or per shard of one)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import Suite


def _task_run_name() -> str:
    from prefect.runtime import task_run

    parameters = task_run.get_parameters()
    name = f"run-model-{parameters['dataset'].spec.name}"
    shard = parameters.get("shard")
    return name if shard is None else f"{name}-shard-{shard[0] + 1}-of-{shard[1]}"


@task(name="run-model", task_run_name=_task_run_name, cache_policy=NO_CACHE)
def run_model_task(
    checkpoint: CheckpointInfo,
    suite: Suite,
    dataset: pipeline.DatasetRef,
    database_url: str | None,
    shard: tuple[int, int] | None = None,
) -> list[str]:
    """Generate (or score) the missing examples of one dataset, or of one shard; returns run warnings."""
    return pipeline.run_model(checkpoint, suite, dataset, database_url=database_url, shard=shard)


def run_models(
    work: list[tuple[CheckpointInfo, pipeline.DatasetRef]],
    suite: Suite,
    database_url: str | None,
    task_runner: str = "default",
    dask_address: str | None = None,
) -> list[str]:
    """The model stage for every (checkpoint, dataset) pair; returns the run warnings in order.

    ``default`` runs one task per dataset in this process. ``dask`` splits each dataset into one shard per
    Dask worker thread (of the cluster at ``dask_address``, or a temporary local one) and runs the shards
    there through prefect-dask; every worker needs the database, the checkpoint and the data.
    """
    if task_runner == "default":
        return [
            w
            for checkpoint, dataset in work
            for w in run_model_task(checkpoint, suite, dataset, database_url)
        ]
    from prefect_dask import DaskTaskRunner

    with DaskTaskRunner(address=dask_address) as runner:
        slots = max(1, sum(runner.client.nthreads().values()))
        futures = [
            runner.submit(
                run_model_task,
                {
                    "checkpoint": checkpoint,
                    "suite": suite,
                    "dataset": dataset,
                    "database_url": database_url,
                    "shard": (index, count),
                },
            )
            for checkpoint, dataset in work
            for count in [min(slots, max(dataset.row_count, 1))]
            for index in range(count)
        ]
        warnings = [w for future in futures for w in future.result()]
    return list(dict.fromkeys(warnings))  # each worker's runner reports the same warnings once
