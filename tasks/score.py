"""Score stage: every metric of one dataset from its stored outputs."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import Suite


@task(name="score", task_run_name="score-{dataset.spec.name}", cache_policy=NO_CACHE)
def score_task(
    checkpoint: CheckpointInfo,
    suite: Suite,
    dataset: pipeline.DatasetRef,
    database_url: str | None,
    base: CheckpointInfo | None = None,
) -> pipeline.DatasetOutcome:
    """Compute the dataset's metrics with CIs and per-example scores (a judge's included)."""
    return pipeline.score(checkpoint, suite, dataset, database_url=database_url, base=base)
