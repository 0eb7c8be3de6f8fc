"""Automation for real: a Prefect server on 127.0.0.1, `posteval serve`, events in, runs in the database.

Also the pieces without a server: the event's payload, its mapping onto flow parameters, waiting for a
checkpoint that is still being written, prefect.yaml and the docker compose file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from posteval.automation import (
    EVENT,
    TRIGGER_PARAMETERS,
    TrainingCompleted,
    emit_training_completed,
    incomplete_reason,
    require_fields,
    training_completed,
    wait_for_checkpoint,
)
from posteval.db.models import Checkpoint, EvalRun, HealthReport, Metric, TriggerFailure
from posteval.errors import CheckpointError, InputError
from posteval.flows.notifications import AUTOMATION_NAME
from tests.helpers import heldout_rows, small_suite, write_jsonl
from tests.servers import PrefectServer, Webhook, poll, stop, webhook_receiver

ROOT = Path(__file__).resolve().parents[1]
SUITE = """\
name: automation
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 6, stop: ["\\n"], batch_size: 8}
training_health: {max_gap: 0.3}  # the verdict from the checkpoint's trainer_state.json
datasets:
  - {name: clauses, path: clauses.jsonl, key: id, prompt: "Clause: {text}\\nType:", reference: label,
     labels: [lease, nda, employment], metrics: [accuracy]}
"""
WAIT_S = 3


GATED_SUITE = """\
name: gated
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 4, batch_size: 16}
datasets:
  - {name: clauses, path: clauses54.jsonl, prompt: "Clause: {text}\\nType:", reference: label, key: id,
     labels: [lease, nda, employment], metrics: [accuracy, {f1: {average: macro}}]}
gates:
  clauses/accuracy: {max_drop: 0.02, alpha: 0.05}
"""


def _command(name: str) -> list[str]:
    """`posteval NAME`, run as the console script runs it."""
    return [sys.executable, "-m", "posteval.cli", name]


@dataclass
class Served:
    """`posteval serve` (notifying a local webhook) against the session's Prefect server, with posteval's
    SQLite database."""

    api_url: str
    env: dict[str, str]
    database_url: str
    suite: Path
    gated_suite: Path
    logs: Path
    webhook: Webhook

    def all_flow_runs(self) -> list[dict[str, Any]]:
        response = httpx.post(f"{self.api_url}/flow_runs/filter", json={"limit": 200}, timeout=10)
        response.raise_for_status()
        return list(response.json())

    def flow_runs(self, checkpoint: str, **parameters: Any) -> list[dict[str, Any]]:
        """Flow runs of the event deployment for ``checkpoint`` (and ``parameters``), oldest first."""
        wanted = {"checkpoint": checkpoint, **parameters}
        runs = [
            r
            for r in self.all_flow_runs()
            if not r["parent_task_run_id"] and all(r["parameters"].get(k) == v for k, v in wanted.items())
        ]
        return sorted(runs, key=lambda r: r["created"])

    def finished(self, checkpoint: str, count: int, **parameters: Any) -> list[dict[str, Any]]:
        """Wait until ``count`` flow runs for ``checkpoint`` have reached a final state."""
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

        def done() -> list[dict[str, Any]] | None:
            runs = self.flow_runs(checkpoint, **parameters)
            return runs if len(runs) >= count and all(r["state"]["type"] in final for r in runs) else None

        return list(poll(f"{count} finished flow run(s) for {checkpoint}", done, logs=self.logs))

    def subflow_runs(self, parents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The post-training flow runs started by ``parents``."""
        task_runs = httpx.post(
            f"{self.api_url}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [p["id"] for p in parents]}}, "limit": 200},
            timeout=10,
        ).json()
        ids = {t["id"] for t in task_runs}
        return [r for r in self.all_flow_runs() if r["parent_task_run_id"] in ids]


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("automation")
    write_jsonl(folder / "clauses.jsonl", heldout_rows(12))
    write_jsonl(folder / "clauses54.jsonl", heldout_rows(54))
    suite, gated = folder / "suite.yaml", folder / "gated.yaml"
    suite.write_text(SUITE)
    gated.write_text(GATED_SUITE)
    env = {
        **prefect_server.env,
        "POSTEVAL_HOME": str(folder / "posteval"),
        "POSTEVAL_DATABASE_URL": f"sqlite:///{folder / 'posteval.db'}",
        "POSTEVAL_CHECKPOINT_WAIT_S": str(WAIT_S),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # pick up triggered runs at once, not within 10 s
    }
    # As in a user's shell: no logging level set, so `posteval serve` must not pass its own quiet one on.
    env.pop("PREFECT_LOGGING_LEVEL", None)
    with webhook_receiver() as webhook:
        command = [*_command("serve"), "--suite", str(suite), "--limit", "4", "--notify-webhook", webhook.url]
        process = prefect_server.start(command, ROOT, env)
        try:

            def automations_ready() -> bool:
                found = httpx.post(f"{prefect_server.api_url}/automations/filter", json={}, timeout=5).json()
                names = {a["name"] for a in found}
                trigger = any(a["trigger"].get("expect") == [EVENT] for a in found)
                return trigger and AUTOMATION_NAME in names

            poll(
                "the served deployments' trigger and the notification",
                automations_ready,
                logs=prefect_server.logs,
            )
            database_url = env["POSTEVAL_DATABASE_URL"]
            yield Served(
                prefect_server.api_url, env, database_url, suite, gated, prefect_server.logs, webhook
            )
        finally:
            stop(process)


def _emit_raw(api_url: str, payload: dict[str, Any]) -> None:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async def send() -> None:
        async with PrefectEventsClient(api_url=api_url) as client:
            resource = {"prefect.resource.id": f"posteval.inputs.checkpoint.{payload.get('checkpoint')}"}
            await client.emit(Event(event=EVENT, resource=resource, payload=payload))

    asyncio.run(send())


@dataclass
class Deliveries:
    """The events sent at once, so their flow runs overlap: a good one twice, two bad ones."""

    checkpoint: str
    cli: subprocess.CompletedProcess[str]
    incomplete: Path


NO_SUITE = "/checkpoints/no-suite"


@pytest.fixture(scope="module")
def deliveries(
    served: Served, finetuned_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Deliveries:
    checkpoint = str(finetuned_checkpoint.resolve())
    incomplete = tmp_path_factory.mktemp("still-training")
    (incomplete / "config.json").write_text("{}")
    cli = subprocess.run(
        [*_command("trigger"), checkpoint, "--suite", str(served.suite)],
        env=served.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    emit_training_completed(training_completed(checkpoint, served.suite), api_url=served.api_url)
    _emit_raw(served.api_url, {"checkpoint": NO_SUITE, "model_name": "m"})
    _emit_raw(served.api_url, {"checkpoint": str(incomplete), "suite": str(served.suite)})
    return Deliveries(checkpoint, cli, incomplete)


def test_an_event_delivered_twice_makes_one_run_that_lands_in_the_database(
    served: Served, deliveries: Deliveries
) -> None:
    checkpoint = deliveries.checkpoint
    assert deliveries.cli.returncode == 0, deliveries.cli.stderr
    assert deliveries.cli.stdout.startswith(f"emitted {EVENT} for {checkpoint} (event ")
    runs = served.finished(checkpoint, count=2, model_name="contracts-ft")
    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    assert runs[0]["parameters"] == {
        "checkpoint": checkpoint,
        "suite": str(served.suite),
        "model_name": "contracts-ft",
        "step": None,
        "base_model": None,
    }
    engine = create_engine(served.database_url)
    with Session(engine) as session:
        query = select(EvalRun, Checkpoint).join(Checkpoint).where(EvalRun.model_name == "contracts-ft")
        rows = session.execute(query).all()
        assert [(run.status, run.trigger, ckpt.path) for run, ckpt in rows] == [
            ("succeeded", "event", checkpoint)
        ]
        metric = session.scalars(select(Metric).filter_by(run_id=rows[0][0].id)).one()
        assert (metric.name, metric.n) == ("accuracy", 12)
    engine.dispose()


def test_a_payload_without_the_suite_fails_its_flow_run_naming_the_field(
    served: Served, deliveries: Deliveries
) -> None:
    [run] = served.finished(NO_SUITE, count=1)
    assert run["state"]["type"] == "FAILED"
    assert (
        f"event {EVENT}: the payload has no 'suite' (the suite YAML file's path)" in run["state"]["message"]
    )


def test_a_checkpoint_that_never_completes_fails_after_the_configured_wait(
    served: Served, deliveries: Deliveries
) -> None:
    folder = deliveries.incomplete
    [run] = served.finished(str(folder), count=1)
    assert run["state"]["type"] == "FAILED"
    assert (
        f"checkpoint {folder} is not complete after waiting {WAIT_S}s: no weights found "
        "(expected one of model.safetensors, pytorch_model.bin, sharded *.safetensors) "
        "(set POSTEVAL_CHECKPOINT_WAIT_S to wait longer)"
    ) in run["state"]["message"]


def _flow_run_logs(api_url: str, flow_run_ids: list[str]) -> list[Any]:
    """The logs the Prefect server holds for these flow runs, read with the Prefect client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        ids = [UUID(i) for i in flow_run_ids]
        return list(client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids))))


def test_a_served_flow_run_logs_its_checkpoint_run_metrics_and_verdicts_at_info(
    served: Served, deliveries: Deliveries, finetuned_checkpoint: Path
) -> None:
    checkpoint = deliveries.checkpoint
    parents = served.finished(checkpoint, count=2, model_name="contracts-ft")
    logs = _flow_run_logs(served.api_url, [r["id"] for r in parents + served.subflow_runs(parents)])
    messages = {log.message for log in logs}
    step = json.loads((finetuned_checkpoint / "trainer_state.json").read_text())["global_step"]
    engine = create_engine(served.database_url)
    with Session(engine) as session:
        run = session.scalars(select(EvalRun).filter_by(model_name="contracts-ft")).one()
        metric = session.scalars(select(Metric).filter_by(run_id=run.id)).one()
        health = session.scalars(select(HealthReport).filter_by(run_id=run.id)).one()
    engine.dispose()
    accuracy = f"accuracy={metric.value:.4f} [{metric.ci_low:.4f}, {metric.ci_high:.4f}]"
    assert {
        f"training of contracts-ft completed at step {step}: {checkpoint}",
        f"posteval run {run.id} (running): checkpoint {checkpoint} of contracts-ft at step {step}, "
        "suite automation",
        f"dataset clauses (n=12): {accuracy}",
        f"training health: {health.verdict} ({health.reason})",
        f"gate {run.gate_status} for run {run.id}: {run.gate_summary}",
    } <= messages
    # Prefect's own task-run lines ("Finished in state Completed()") stay at WARNING and below it: unsent.
    assert [log.message for log in logs if log.task_run_id is not None and log.level < logging.WARNING] == []


def test_failed_triggers_are_kept_with_their_flow_run_and_listed_as_failed_runs(
    served: Served, deliveries: Deliveries
) -> None:
    [no_suite] = served.finished(NO_SUITE, count=1)
    [incomplete] = served.finished(str(deliveries.incomplete), count=1)
    engine = create_engine(served.database_url)
    with Session(engine) as session:
        failures = {f.flow_run_id: f for f in session.scalars(select(TriggerFailure))}
    engine.dispose()
    assert set(failures) == {no_suite["id"], incomplete["id"]}
    assert failures[no_suite["id"]].error == (
        f"InputError: event {EVENT}: the payload has no 'suite' (the suite YAML file's path)"
    )
    assert failures[incomplete["id"]].error.startswith(
        f"CheckpointError: checkpoint {deliveries.incomplete} is not complete after waiting {WAIT_S}s"
    )
    listed = subprocess.run(
        [*_command("runs"), "list", "--status", "failed", "--format", "json"],
        env=served.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {row["run_id"]: row for row in json.loads(listed.stdout)}
    assert {rows[f.id]["checkpoint"] for f in failures.values()} == {NO_SUITE, str(deliveries.incomplete)}
    assert {rows[f.id]["status"] for f in failures.values()} == {"failed"}
    assert rows[failures[no_suite["id"]].id]["error"] == failures[no_suite["id"]].error


def test_a_failed_gate_fails_the_flow_run_and_notifies_the_webhook_once(
    served: Served, deliveries: Deliveries, finetuned_checkpoint: Path, overfit_checkpoint: Path
) -> None:
    good, bad = str(finetuned_checkpoint.resolve()), str(overfit_checkpoint.resolve())
    # One after the other, the second at a later training step than the first's trainer_state.json says:
    # it is gated against the first.
    for step, checkpoint in ((None, good), (10**6, bad)):
        emit_training_completed(
            training_completed(checkpoint, served.gated_suite, model_name="gated", step=step),
            api_url=served.api_url,
        )
        [run] = served.finished(checkpoint, count=1, model_name="gated")
    assert run["state"]["type"] == "FAILED"
    assert "GateFailed" in run["state"]["message"]
    engine = create_engine(served.database_url)
    with Session(engine) as session:
        stored = session.scalars(
            select(EvalRun).filter_by(model_name="gated").order_by(EvalRun.created_at)
        ).all()
    engine.dispose()
    assert [(r.status, r.gate_status) for r in stored] == [
        ("succeeded", "no_baseline"),
        ("succeeded", "failed"),
    ]

    def about_it() -> list[dict[str, Any]]:
        return [post for post in served.webhook.posts if run["name"] in post["body"]]

    poll("the webhook's notification", about_it, logs=served.logs)
    time.sleep(3)  # a second notification for the same flow run would have come by now
    [post] = about_it()
    assert post["subject"] == f"posteval: posteval-training-completed run {run['name']} Failed"
    assert post["body"].startswith(f"Flow run {run['name']} of posteval-training-completed is Failed: ")
    assert f"checkpoint: {bad}" in post["body"]
    assert post["name"] == "posteval-failures"


# --- without a server --------------------------------------------------------------------------------


def test_the_event_names_absolute_paths_and_takes_model_and_step_from_a_trainer_folder(
    tmp_path: Path,
) -> None:
    event = training_completed(tmp_path / "run-7" / "checkpoint-40", "suite.yaml", base_model="base")
    assert event == TrainingCompleted(
        str(tmp_path / "run-7" / "checkpoint-40"),
        str(Path("suite.yaml").resolve()),
        "run-7",
        40,
        str(Path("base").resolve()),
    )
    assert event.resource() == {
        "prefect.resource.id": f"posteval.inputs.checkpoint.{tmp_path / 'run-7' / 'checkpoint-40'}",
        "prefect.resource.name": "run-7",
    }


def test_the_trigger_maps_each_payload_field_to_a_parameter_and_a_missing_one_to_none() -> None:
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    parameters: dict[str, Any] = dict(TRIGGER_PARAMETERS)
    RunDeployment._upgrade_v1_templates(parameters)  # what the server does to the deployment's templates
    payload = {"checkpoint": "/c/checkpoint-3", "model_name": "m", "step": 3}
    context = HydrationContext(
        raise_on_error=True, render_jinja=True, jinja_context={"event": {"payload": payload}}
    )
    assert hydrate(parameters, context) == {
        "checkpoint": "/c/checkpoint-3",
        "suite": None,
        "model_name": "m",
        "step": 3,
        "base_model": None,
    }


@pytest.mark.parametrize(
    ("checkpoint", "suite", "missing"), [(None, "s.yaml", "checkpoint"), ("/c", "", "suite")]
)
def test_a_missing_required_field_is_named(checkpoint: str | None, suite: str, missing: str) -> None:
    with pytest.raises(InputError, match=rf"^event {EVENT}: the payload has no '{missing}' \("):
        require_fields(checkpoint, suite)


def test_trigger_without_a_prefect_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path)}
    result = subprocess.run(
        [*_command("trigger"), str(tmp_path / "ckpt"), "--suite", "s.yaml"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: PREFECT_API_URL is not set: point it at the Prefect server that serves posteval's "
        "deployments, e.g. http://127.0.0.1:4200/api"
    )


def test_waiting_returns_once_the_last_file_is_written(base_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-9"
    folder.mkdir()
    shutil.copy(base_checkpoint / "config.json", folder)
    assert incomplete_reason(folder) == (
        "no weights found (expected one of model.safetensors, pytorch_model.bin, sharded *.safetensors)"
    )
    writer = threading.Timer(1.0, shutil.copy, (base_checkpoint / "model.safetensors", folder))
    writer.start()
    started = time.monotonic()
    wait_for_checkpoint(str(folder), timeout_s=30, poll_s=0.2, settle_s=0.5)
    writer.join()
    assert 1.0 <= time.monotonic() - started < 30
    assert incomplete_reason(folder) is None


def test_a_shard_named_by_the_index_but_not_written_keeps_the_folder_incomplete(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    index = (
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    (tmp_path / "model.safetensors.index.json").write_text(index)
    assert incomplete_reason(tmp_path) == (
        "model.safetensors.index.json names shards not written yet: model-00002-of-00002.safetensors"
    )
    with pytest.raises(CheckpointError, match=r"is not complete after waiting 0.3s: model.safetensors.index"):
        wait_for_checkpoint(str(tmp_path), timeout_s=0.3, poll_s=0.1)


def test_prefect_yaml_declares_both_deployments_with_loadable_entrypoints_and_the_trigger() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.flows import load_flow_from_entrypoint

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert sorted(deployments) == ["nightly", "on-training-completed"]
    names = {
        name: load_flow_from_entrypoint(str(ROOT / d["entrypoint"])).name for name, d in deployments.items()
    }
    assert names == {"on-training-completed": "posteval-training-completed", "nightly": "posteval-nightly"}
    [trigger] = deployments["on-training-completed"]["triggers"]
    parsed = DeploymentEventTrigger.model_validate(trigger)
    assert (parsed.expect, parsed.parameters) == ({EVENT}, TRIGGER_PARAMETERS)
    [schedule] = deployments["nightly"]["schedules"]
    assert set(schedule) >= {"cron", "timezone"}
    assert deployments["nightly"]["parameters"]["suites"]


def test_compose_runs_postgres_with_both_databases_the_prefect_server_and_a_worker() -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "prefect-server", "worker"} <= set(services)
    server_env = services["prefect-server"]["environment"]
    assert "@postgres:5432/prefect" in server_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    worker_env = services["worker"]["environment"]
    assert "@postgres:5432/posteval" in worker_env["POSTEVAL_DATABASE_URL"]
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    init = (ROOT / "docker" / "initdb" / "create-databases.sql").read_text()
    assert "CREATE DATABASE posteval" in init and "CREATE DATABASE prefect" in init


def test_deployments_never_carry_the_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from posteval.flows.deployments import deployments

    suite = small_suite(tmp_path)
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", "postgresql+psycopg://user:secret@db/posteval")
    built = deployments([str(suite)], task_runner="dask", dask_address="tcp://h:8786")
    assert [sorted(d.parameters) for d in built] == [
        ["dask_address", "task_runner"],
        ["dask_address", "suites", "task_runner"],
    ]
