"""With POSTEVAL_MLFLOW_TRACKING_URI set, each succeeded run is also one run on a real MLflow server.

The server is MLflow's own (`mlflow server`, SQLite backend, artifacts proxied to a temporary folder),
started here on 127.0.0.1; everything is read back with MLflow's client and compared with what posteval
stored. Without the variable, nothing of mlflow is imported (checked in a fresh interpreter).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

import posteval
from posteval.db import queries
from posteval.db.models import Checkpoint, Dataset, EvalRun, Metric, Suite
from posteval.errors import GateFailed
from posteval.flows.post_training import evaluate_checkpoint
from posteval.pipeline import mlflow_export
from posteval.settings import get_settings
from tests.conftest import IN_CI
from tests.helpers import heldout_rows, write_jsonl

try:  # the `mlflow` extra (part of `dev`): required under CI, a skip elsewhere
    from mlflow.tracking import MlflowClient
except ImportError:
    if IN_CI:
        raise
    pytest.skip("the mlflow extra is not installed", allow_module_level=True)

GENERAL = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "general.jsonl"
EXPERIMENT = "posteval-tests"
SUITE = """\
name: {name}
base_model: {base}
generation: {{max_new_tokens: 4, batch_size: 16}}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    labels: [lease, nda, employment]
    metrics: [accuracy, {{f1: {{average: macro}}}}]
  - name: general-text
    path: general.jsonl
    kind: perplexity
    key: id
    general: true
    metrics: [perplexity]
training_health: {{max_gap: 0.3, patience: 3}}
forgetting: {{tolerance: 1.0, alpha: 0.05}}
gates:
  clauses/accuracy: {{max_drop: 0.02, alpha: 0.05}}
"""


def test_metric_keys_keep_what_mlflow_accepts_and_replace_the_rest() -> None:
    assert mlflow_export.metric_key("contract-type", "f1", "ci_low") == "contract-type/f1/ci_low"
    assert mlflow_export.metric_key("q&a", "pkg.metrics:dates_valid") == "q_a/pkg.metrics_dates_valid"
    assert mlflow_export.metric_key("..", "a/b") == "_../a_b"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on a free local port: SQLite backend, artifacts in a temporary folder."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (folder / "server.log").open("w")
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(folder / "artifacts")]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {server.returncode}:\n{(folder / 'server.log').read_text()}"
                )
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its worker: the group this fixture started
        server.wait(timeout=60)
        log.close()


@pytest.fixture
def tracking(monkeypatch: pytest.MonkeyPatch, mlflow_uri: str) -> Iterator[MlflowClient]:
    """POSTEVAL_MLFLOW_TRACKING_URI pointing at the test server, for one test."""
    monkeypatch.setenv("POSTEVAL_MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("POSTEVAL_MLFLOW_EXPERIMENT", EXPERIMENT)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    get_settings.cache_clear()
    yield MlflowClient(tracking_uri=mlflow_uri)
    monkeypatch.undo()
    get_settings.cache_clear()  # after the undo: the next read sees the environment as it was


@pytest.fixture(scope="module")
def suite_folder(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-suites")
    write_jsonl(folder / "clauses.jsonl", heldout_rows(54))
    (folder / "general.jsonl").write_text("".join(GENERAL.read_text().splitlines(keepends=True)[:8]))
    for name in ("mlflow-gated", "mlflow-down", "mlflow-unset"):
        (folder / f"{name}.yaml").write_text(SUITE.format(name=name, base=base_checkpoint))
    return folder


def _evaluate(checkpoint: Path, suite: Path, url: str) -> str:
    """The run id of an evaluation through the flow, also when its gate fails."""
    try:
        return evaluate_checkpoint(
            checkpoint=str(checkpoint), suite=str(suite), model_name="mlflow-lineage", database_url=url
        )
    except GateFailed as failed:
        return failed.run_id


def _mlflow_runs(client: MlflowClient) -> dict[str, Any]:
    """Every MLflow run of the test experiment by its posteval run id tag (a duplicate fails here)."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id], max_results=100)
    ids = [run.data.tags["posteval.run_id"] for run in found]
    assert len(ids) == len(set(ids)), f"duplicate MLflow runs: {ids}"
    return {run.data.tags["posteval.run_id"]: run for run in found}


@pytest.fixture(scope="module")
def lineage(
    prefect_harness: None,
    mlflow_uri: str,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    suite_folder: Path,
    sqlite_url: str,
) -> tuple[str, str]:
    """The sensible fine-tune (no baseline), then the overfit one (its gate fails), logged to MLflow."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSTEVAL_MLFLOW_TRACKING_URI", mlflow_uri)
        patch.setenv("POSTEVAL_MLFLOW_EXPERIMENT", EXPERIMENT)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        get_settings.cache_clear()
        suite = suite_folder / "mlflow-gated.yaml"
        good = _evaluate(finetuned_checkpoint, suite, sqlite_url)
        bad = _evaluate(overfit_checkpoint, suite, sqlite_url)
    get_settings.cache_clear()
    return good, bad


def _trainer_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])


def test_each_run_is_one_mlflow_run_with_the_stored_metrics_at_its_training_step(
    lineage: tuple[str, str],
    tracking: MlflowClient,
    sqlite_url: str,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
) -> None:
    runs = _mlflow_runs(tracking)
    assert set(runs) == set(lineage)
    for run_id, checkpoint in zip(lineage, (finetuned_checkpoint, overfit_checkpoint), strict=True):
        stored = posteval.run_metrics(run_id, database_url=sqlite_url)
        expected: dict[str, float] = {}
        for row in stored.itertuples(index=False):
            base = f"{row.dataset}/{row.name}"
            expected |= {base: row.value, f"{base}/ci_low": row.ci_low, f"{base}/ci_high": row.ci_high}
        logged = runs[run_id]
        assert logged.data.metrics == expected
        assert logged.info.status == "FINISHED"
        step = queries.run_summary(run_id, database_url=sqlite_url)["step"]
        assert step == _trainer_step(checkpoint)
        for key in expected:
            history = tracking.get_metric_history(logged.info.run_id, key)
            assert [(m.step, m.value) for m in history] == [(step, expected[key])]


def test_verdicts_are_tags_and_fingerprints_are_params(
    lineage: tuple[str, str], tracking: MlflowClient, sqlite_url: str
) -> None:
    good, bad = lineage
    runs = _mlflow_runs(tracking)
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        for run_id in lineage:
            run = session.get_one(EvalRun, run_id)
            checkpoint = session.get_one(Checkpoint, run.checkpoint_id)
            suite = session.get_one(Suite, run.suite_id)
            datasets = session.execute(
                select(Dataset.name, Dataset.fingerprint)
                .join(Metric, Metric.dataset_id == Dataset.id)
                .where(Metric.run_id == run_id)
            ).all()
            health = queries.run_health(run_id, database_url=sqlite_url)
            tags, params = runs[run_id].data.tags, runs[run_id].data.params
            assert params == {
                "config_hash": run.config_hash,
                "checkpoint_fingerprint": checkpoint.fingerprint,
                "suite_fingerprint": suite.fingerprint,
                **{f"dataset_fingerprint/{name}": fp for name, fp in datasets},
            }
            assert (tags["posteval.gate"], tags["posteval.gate_summary"]) == (
                run.gate_status,
                run.gate_summary,
            )
            assert tags["posteval.overfitting"] == health["overfitting"]["verdict"]
            assert tags["posteval.forgetting"] == health["forgetting"]["verdict"]
            expected = ("mlflow-lineage", checkpoint.path)
            assert (tags["posteval.model"], tags["posteval.checkpoint"]) == expected
            assert tags["posteval.step"] == str(checkpoint.training_step)
        assert (session.get_one(EvalRun, good).gate_status, session.get_one(EvalRun, bad).gate_status) == (
            "no_baseline",
            "failed",
        )
    engine.dispose()
    assert runs[bad].data.tags["posteval.baseline_run_id"] == good


def test_the_html_report_is_an_artifact(
    lineage: tuple[str, str], tracking: MlflowClient, tmp_path: Path
) -> None:
    _, bad = lineage
    mlflow_run = _mlflow_runs(tracking)[bad].info.run_id
    assert [a.path for a in tracking.list_artifacts(mlflow_run, "posteval")] == ["posteval/report.html"]
    local = Path(tracking.download_artifacts(mlflow_run, "posteval/report.html", str(tmp_path)))
    page = local.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert f"<title>posteval report: mlflow-lineage on mlflow-gated, run {bad[:12]}</title>" in page


def test_a_second_identical_evaluation_makes_no_second_mlflow_run(
    lineage: tuple[str, str],
    tracking: MlflowClient,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    suite_folder: Path,
    sqlite_url: str,
) -> None:
    before = _mlflow_runs(tracking)
    suite = suite_folder / "mlflow-gated.yaml"
    again = (
        _evaluate(finetuned_checkpoint, suite, sqlite_url),
        _evaluate(overfit_checkpoint, suite, sqlite_url),
    )
    assert again == lineage
    after = _mlflow_runs(tracking)
    assert {k: r.info.run_id for k, r in after.items()} == {k: r.info.run_id for k, r in before.items()}
    for run in after.values():  # nothing logged twice: one value per metric still
        key = next(iter(run.data.metrics))
        assert len(tracking.get_metric_history(run.info.run_id, key)) == 1


def _flow_log(flow_run_id: str) -> list[tuple[int, str]]:
    """The flow run's log lines as stored by the Prefect API: (level, message)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    for handler in logging.getLogger("prefect.task_runs").handlers:
        if isinstance(handler, APILogHandler):
            handler.flush()  # sends what is queued and waits for it
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])))
    return [(log.level, log.message) for log in logs]


def test_an_unreachable_mlflow_is_a_warning_on_the_run_not_a_failure(
    prefect_harness: None,
    mlflow_uri: str,
    finetuned_checkpoint: Path,
    suite_folder: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from posteval.cli.common import quiet

    # As `posteval evaluate` starts: the terminal quiet, the flow run's own log still in the Prefect API.
    for name in ("PREFECT_LOGGING_LEVEL", "PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL"):
        monkeypatch.setenv(name, "CRITICAL")
    quiet(verbose=False)
    down = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("POSTEVAL_MLFLOW_TRACKING_URI", down)
    monkeypatch.setenv("POSTEVAL_MLFLOW_EXPERIMENT", EXPERIMENT)
    monkeypatch.delenv(
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False
    )  # posteval's bound, not MLflow's 4 min
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    get_settings.cache_clear()
    suite = suite_folder / "mlflow-down.yaml"
    run_id = _evaluate(finetuned_checkpoint, suite, sqlite_url)
    summary = queries.run_summary(run_id, database_url=sqlite_url)
    assert summary["status"] == "succeeded"
    warnings = [w for w in summary["warnings"] if w.startswith("MLflow export failed: ")]
    assert len(warnings) == 1
    assert "127.0.0.1" in warnings[0]
    assert (logging.WARNING, f"posteval run {run_id}: {warnings[0]}") in _flow_log(
        str(summary["flow_run_id"])
    )

    # A password in the tracking URI never reaches the run's warnings; a new failure replaces the old one.
    port = down.rsplit(":", 1)[1]
    again = mlflow_export.export(
        run_id,
        tracking_uri=f"http://team:s3cret@127.0.0.1:{port}",
        experiment=EXPERIMENT,
        database_url=sqlite_url,
    )
    assert again.mlflow_run_id is None and again.warning is not None
    assert "s3cret" not in again.warning and "team:***@127.0.0.1" in again.warning
    stored = queries.run_summary(run_id, database_url=sqlite_url)["warnings"]
    assert [w for w in stored if w.startswith("MLflow export failed: ")] == [again.warning]

    # Once MLflow is back, the next delivery logs the run and the warning goes.
    monkeypatch.setenv("POSTEVAL_MLFLOW_TRACKING_URI", mlflow_uri)
    get_settings.cache_clear()
    assert _evaluate(finetuned_checkpoint, suite, sqlite_url) == run_id
    summary = queries.run_summary(run_id, database_url=sqlite_url)
    assert not [w for w in summary["warnings"] if w.startswith("MLflow export failed: ")]
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert _mlflow_runs(client)[run_id].info.status == "FINISHED"
    get_settings.cache_clear()


UNSET_SCRIPT = """\
import json, sys
from posteval.flows.post_training import evaluate_checkpoint
from posteval.pipeline import mlflow_export
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")
run_id = evaluate_checkpoint(checkpoint=sys.argv[1], suite=sys.argv[2], database_url=sys.argv[3])
print(json.dumps({"run_id": run_id, "after_import": loaded,
                  "after_run": sorted(m for m in sys.modules if m.split(".")[0] == "mlflow")}))
"""


def test_nothing_of_mlflow_is_imported_without_a_tracking_uri(
    prefect_harness: None, finetuned_checkpoint: Path, suite_folder: Path, sqlite_url: str, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEVAL_MLFLOW_", "MLFLOW_"))}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the session's Prefect server
    suite = suite_folder / "mlflow-unset.yaml"
    command = [sys.executable, "-c", UNSET_SCRIPT, str(finetuned_checkpoint), str(suite), sqlite_url]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["after_import"], result["after_run"]) == ([], [])
    summary = queries.run_summary(result["run_id"], database_url=sqlite_url)
    assert (summary["status"], summary["suite"]) == ("succeeded", "mlflow-unset")
