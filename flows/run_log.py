"""What a post-training flow run says in its Prefect log, at INFO: which checkpoint and run, each dataset's
metrics, the training-health, forgetting and gate verdicts. Prefect's own lines stay at WARNING (see
``posteval.flows.deployments.FLOW_RUN_LOGGING``), so these are what the Prefect UI shows for a run.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect.logging import get_run_logger

from posteval.inputs.checkpoint import CheckpointInfo
from posteval.judging.forgetting import ForgettingReport
from posteval.judging.health import HealthReport
from posteval.numbers import ci, num
from posteval.pipeline import DatasetOutcome


def log_run(run_id: str, status: str, checkpoint: CheckpointInfo, suite: str) -> None:
    """The run this flow run evaluates, and on what."""
    get_run_logger().info(
        "posteval run %s (%s): checkpoint %s of %s at step %s, suite %s",
        run_id,
        status,
        checkpoint.location,
        checkpoint.model_name,
        checkpoint.training_step,
        suite,
    )


def log_metrics(outcomes: Sequence[DatasetOutcome]) -> None:
    """One line per dataset: every metric with its confidence interval."""
    logger = get_run_logger()
    for outcome in outcomes:
        metrics = ", ".join(f"{r.name}={num(r.value)} {ci(r.ci_low, r.ci_high)}" for r in outcome.results)
        logger.info("dataset %s (n=%d): %s", outcome.dataset.spec.name, outcome.dataset.row_count, metrics)


def log_health(health: HealthReport | None, forgetting: ForgettingReport | None) -> None:
    """The overfitting and forgetting verdicts, with their reasons."""
    logger = get_run_logger()
    if health is not None:
        logger.info("training health: %s (%s)", health.verdict, health.reason)
    if forgetting is not None:
        logger.info("forgetting: %s (%s)", forgetting.verdict, forgetting.reason)


def log_gate(run_id: str, status: str, summary: str) -> None:
    """The regression gate's verdict; a failed gate is a warning (the flow run then fails)."""
    level = "warning" if status == "failed" else "info"
    getattr(get_run_logger(), level)("gate %s for run %s: %s", status, run_id, summary)
