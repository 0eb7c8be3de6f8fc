"""MLflow stage: a succeeded run also logged to MLflow, when POSTEVAL_MLFLOW_TRACKING_URI is set."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from posteval.pipeline import mlflow_export
from posteval.settings import get_settings


@task(name="mlflow-export", cache_policy=NO_CACHE)
def mlflow_export_task(run_id: str, database_url: str | None) -> str | None:
    """Log the run to MLflow and return the MLflow run id; a failure is a warning in this log and on the
    run, never an error (no Prefect retries: MLflow's client retries its own requests).

    The tracking URI is read here from the settings, not passed in: it may hold a password, and task
    parameters are shown by Prefect.
    """
    settings = get_settings()
    if not settings.mlflow_tracking_uri:
        return None
    experiment = settings.mlflow_experiment
    outcome = mlflow_export.export(
        run_id, tracking_uri=settings.mlflow_tracking_uri, experiment=experiment, database_url=database_url
    )
    logger = get_run_logger()
    if outcome.warning is not None:
        logger.warning("posteval run %s: %s", run_id, outcome.warning)
    else:
        logger.info(
            "posteval run %s logged to MLflow run %s (experiment %r)",
            run_id,
            outcome.mlflow_run_id,
            experiment,
        )
    return outcome.mlflow_run_id


def export_to_mlflow(run_id: str, database_url: str | None) -> None:
    """Run :func:`mlflow_export_task` when a tracking URI is set; otherwise nothing (no task run, and
    nothing of mlflow imported)."""
    if get_settings().mlflow_tracking_uri:
        mlflow_export_task(run_id, database_url)
