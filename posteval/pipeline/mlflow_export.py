"""A succeeded run also logged to MLflow (the optional `mlflow` extra): one MLflow run per posteval run.

What is logged, all read back from the database: every metric with its CI as ``DATASET/METRIC``,
``DATASET/METRIC/ci_low`` and ``.../ci_high`` at the checkpoint's training step; the fingerprints (config
hash, checkpoint, suite, every dataset) as params; the verdicts (gate, overfitting, forgetting), model,
suite, checkpoint and run id as ``posteval.*`` tags; the HTML report as the artifact
``posteval/report.html``. The MLflow run is found again by its ``posteval.run_id`` tag, so a re-delivered
or cached run never makes a second one: a finished one only gets its tags refreshed (the gate may have
been decided again), an unfinished one (an export cut off half-way) is completed.

Only :class:`mlflow.tracking.MlflowClient` is used, never MLflow's fluent API, whose active-run state
belongs to the user's process (transformers' MLflowCallback may hold a run open in it). mlflow is imported
inside :func:`log_run` alone, so nothing of it is loaded while no tracking URI is set.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from posteval.db import queries, reads, repo
from posteval.db.engine import session_scope
from posteval.db.retry import retry_transient
from posteval.errors import InputError, short_error

RUN_TAG = "posteval.run_id"
REPORT_FOLDER = "posteval"  # the report is the artifact posteval/report.html
WARNING_PREFIX = "MLflow export failed: "
# MLflow's per-request limits (mlflow.utils.validation): entities per log_batch call, tag value length.
METRICS_PER_BATCH, PARAMS_TAGS_PER_BATCH, TAG_VALUE_MAX = 1000, 100, 8000


@dataclass(frozen=True)
class RunFacts:
    """What MLflow gets of one posteval run."""

    name: str
    step: int  # the checkpoint's training step; 0 where it is unknown (MLflow's own default step)
    started_ms: int | None
    finished_ms: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


@dataclass(frozen=True)
class Export:
    """The outcome of one export: the MLflow run, or the warning that was recorded on the posteval run."""

    mlflow_run_id: str | None
    warning: str | None


def metric_key(*parts: str) -> str:
    """An MLflow metric key from ``parts`` joined by ``/``; a character MLflow refuses in a name (it
    allows letters, digits, ``_ - . /`` and spaces) becomes ``_``, and so does a bare ``.`` or ``..`` part."""
    cleaned = [re.sub(r"[^\w.\- ]", "_", part) for part in parts]
    return "/".join(f"_{part}" if part.strip(".") == "" else part for part in cleaned)


def _ms(moment: object) -> int | None:
    timestamp = getattr(moment, "timestamp", None)
    return None if timestamp is None else int(timestamp() * 1000)


def run_facts(run_id: str, *, database_url: str | None = None) -> RunFacts:
    """The metrics, params and tags of the succeeded run ``run_id``, read from the database."""
    summary = queries.run_summary(run_id, database_url=database_url)
    if summary["status"] != "succeeded":
        raise InputError(f"run {run_id} is {summary['status']}: only a succeeded run is logged to MLflow")
    with session_scope(database_url) as session:
        prints = reads.run_fingerprints(session, run_id)
    metrics: dict[str, float] = {}
    for row in queries.run_metrics(run_id, database_url=database_url).itertuples(index=False):
        for key, value in ((), row.value), (("ci_low",), row.ci_low), (("ci_high",), row.ci_high):
            name = metric_key(str(row.dataset), str(row.name), *key)
            if name in metrics:
                raise InputError(f"two metrics of run {run_id} have the same MLflow name {name!r}")
            if value is not None and value == value:  # an undefined (NaN) value is not logged
                metrics[name] = float(value)
    params = {"config_hash": prints.config_hash or "", "checkpoint_fingerprint": prints.checkpoint}
    params["suite_fingerprint"] = prints.suite
    params |= {metric_key("dataset_fingerprint", name): fp for name, fp in prints.datasets.items()}
    step = summary["step"]
    tags = {
        RUN_TAG: run_id,
        "posteval.model": summary["model"],
        "posteval.suite": summary["suite"],
        "posteval.checkpoint": summary["checkpoint"],
        "posteval.step": "unknown" if step is None else str(step),
        "posteval.trigger": summary["trigger"],
        "posteval.gate": summary["gate_status"] or "none",
        "posteval.gate_summary": summary["gate_summary"] or "",
        "posteval.baseline_run_id": summary["baseline_run_id"] or "",
        "posteval.flow_run_id": summary["flow_run_id"] or "",
    }
    health = queries.run_health(run_id, database_url=database_url)
    tags |= {f"posteval.{kind}": str(report["verdict"]) for kind, report in health.items()}
    return RunFacts(
        name=f"{summary['model']} step {'?' if step is None else step} on {summary['suite']}",
        step=step if isinstance(step, int) else 0,
        started_ms=_ms(summary["started_at"]),
        finished_ms=_ms(summary["finished_at"]) or 0,
        metrics=metrics,
        params=params,
        tags={key: str(value)[:TAG_VALUE_MAX] for key, value in tags.items()},
    )


def log_run(run_id: str, *, tracking_uri: str, experiment: str, database_url: str | None = None) -> str:
    """Log the succeeded run ``run_id`` to the MLflow tracking server at ``tracking_uri``, in the
    experiment ``experiment`` (created when missing); returns the MLflow run id. Raises on any failure."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise InputError(
            f"POSTEVAL_MLFLOW_TRACKING_URI is set but mlflow is not installed ({exc}): "
            "pip install 'posteval[mlflow]'"
        ) from None
    facts = run_facts(run_id, database_url=database_url)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(experiment)
        except MlflowException:  # created meanwhile by another export: use that one
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
    if found is not None:
        experiment_id = found.experiment_id
    tags = [RunTag(key, value) for key, value in facts.tags.items()]
    earlier = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1
    )
    if earlier and earlier[0].info.status == "FINISHED":  # logged before: only its tags may be new
        for start in range(0, len(tags), PARAMS_TAGS_PER_BATCH):
            client.log_batch(earlier[0].info.run_id, tags=tags[start : start + PARAMS_TAGS_PER_BATCH])
        return str(earlier[0].info.run_id)
    if earlier:  # an export cut off half-way: complete it (same values, same timestamps, same step)
        mlflow_run = str(earlier[0].info.run_id)
    else:
        created = client.create_run(
            experiment_id, start_time=facts.started_ms, tags={RUN_TAG: run_id}, run_name=facts.name
        )
        mlflow_run = str(created.info.run_id)
    metrics = [Metric(key, value, facts.finished_ms, facts.step) for key, value in facts.metrics.items()]
    for start in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(mlflow_run, metrics=metrics[start : start + METRICS_PER_BATCH])
    params = [Param(key, value) for key, value in facts.params.items()]
    for start in range(0, max(len(params), len(tags)), PARAMS_TAGS_PER_BATCH):
        window = slice(start, start + PARAMS_TAGS_PER_BATCH)
        client.log_batch(mlflow_run, params=params[window], tags=tags[window])
    with tempfile.TemporaryDirectory() as folder:
        from posteval.views.report import write_report  # matplotlib: only where a run is exported

        report = write_report(run_id, Path(folder) / "report.html", database_url=database_url)
        client.log_artifact(mlflow_run, str(report), artifact_path=REPORT_FOLDER)
    client.set_terminated(mlflow_run, "FINISHED", end_time=facts.finished_ms)
    return mlflow_run


# MLflow's own default retries a dead server 7 times with backoff (about 4 minutes per request): every run
# would wait that long to record a warning. Unless the user set them, the export tries 3 times, 10 s each.
EXPORT_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def _bounded_retries() -> Iterator[None]:
    unset = [name for name in EXPORT_HTTP_DEFAULTS if name not in os.environ]
    os.environ.update({name: EXPORT_HTTP_DEFAULTS[name] for name in unset})
    try:
        yield
    finally:
        for name in unset:
            os.environ.pop(name, None)


def export(run_id: str, *, tracking_uri: str, experiment: str, database_url: str | None = None) -> Export:
    """:func:`log_run`, with a failure (server down, refused request) turned into a warning on the run.

    The run stays succeeded whatever MLflow answers: the warning (``MLflow export failed: ...``, any
    password in the tracking URI masked) replaces an earlier one, and a successful export removes it.
    """
    try:
        with _bounded_retries():
            mlflow_run: str | None = log_run(
                run_id, tracking_uri=tracking_uri, experiment=experiment, database_url=database_url
            )
        warning = None
    except Exception as exc:
        password = urlsplit(tracking_uri).password
        error = short_error(exc)
        mlflow_run, warning = None, WARNING_PREFIX + (error.replace(password, "***") if password else error)

    def record() -> None:
        with session_scope(database_url) as session:
            repo.replace_warning(session, run_id, WARNING_PREFIX, warning)

    retry_transient(record, "recording the MLflow export")
    return Export(mlflow_run, warning)
