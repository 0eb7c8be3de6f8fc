"""Training-health stage: the overfitting detector and the forgetting check against the base model."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import Suite
from posteval.judging.forgetting import ForgettingReport
from posteval.judging.health import HealthReport


@task(name="assess-overfitting", cache_policy=NO_CACHE)
def overfitting_task(
    checkpoint: CheckpointInfo, suite: Suite, outcomes: Sequence[pipeline.DatasetOutcome]
) -> HealthReport | None:
    """Verdict from the training log and the measured train/validation loss gap."""
    return pipeline.assess_health(checkpoint, suite, outcomes)


@task(name="assess-forgetting", cache_policy=NO_CACHE)
def forgetting_task(
    suite: Suite,
    base_outcomes: Sequence[pipeline.DatasetOutcome],
    outcomes: Sequence[pipeline.DatasetOutcome],
) -> ForgettingReport:
    """The fine-tune against its base model on the general datasets, with paired tests."""
    return pipeline.assess_base_forgetting(suite, base_outcomes, outcomes)
