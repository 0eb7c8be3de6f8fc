"""Model stage: outputs for every example not yet stored, one task per dataset."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.checkpoint import CheckpointInfo
from posteval.suite import Suite


@task(name="run-model", task_run_name="run-model-{dataset.spec.name}", cache_policy=NO_CACHE)
def run_model_task(
    checkpoint: CheckpointInfo, suite: Suite, dataset: pipeline.DatasetRef, database_url: str | None
) -> list[str]:
    """Generate (or score) the missing examples of one dataset; returns warnings for the run."""
    return pipeline.run_model(checkpoint, suite, dataset, database_url=database_url)
