"""Automation for real: a Prefect server on 127.0.0.1, `posteval serve`, events in, runs in the database.

Also the pieces without a server: the event's payload, its mapping onto flow parameters, waiting for a
checkpoint that is still being written, prefect.yaml and the docker compose file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from posteval.db.models import Checkpoint, EvalRun, Metric
from posteval.errors import CheckpointError, InputError
from tests.helpers import heldout_rows, small_suite, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SUITE = """\
name: automation
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 6, stop: ["\\n"], batch_size: 8}
datasets:
  - {name: clauses, path: clauses.jsonl, key: id, prompt: "Clause: {text}\\nType:", reference: label,
     labels: [lease, nda, employment], metrics: [accuracy]}
"""
WAIT_S = 3
TIMEOUT_S = 120


def _command(name: str) -> list[str]:
    """`posteval NAME`, run as the console script runs it."""
    return [sys.executable, "-m", "posteval.cli", name]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _poll(what: str, check: Callable[[], Any], timeout: float = TIMEOUT_S, logs: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    tail = logs.read_text()[-4000:] if logs and logs.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Served:
    """A Prefect server and `posteval serve` against it, with posteval's SQLite database."""

    api_url: str
    env: dict[str, str]
    database_url: str
    suite: Path
    logs: Path

    def flow_runs(self, checkpoint: str) -> list[dict[str, Any]]:
        """Flow runs of the event deployment whose checkpoint parameter is ``checkpoint``."""
        response = httpx.post(f"{self.api_url}/flow_runs/filter", json={"limit": 200}, timeout=10)
        response.raise_for_status()
        runs = response.json()
        return [
            r for r in runs if r["parameters"].get("checkpoint") == checkpoint and not r["parent_task_run_id"]
        ]

    def finished(self, checkpoint: str, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` flow runs for ``checkpoint`` have reached a final state."""
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

        def done() -> list[dict[str, Any]] | None:
            runs = self.flow_runs(checkpoint)
            return runs if len(runs) >= count and all(r["state"]["type"] in final for r in runs) else None

        return list(_poll(f"{count} finished flow run(s) for {checkpoint}", done, logs=self.logs))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("automation")
    write_jsonl(folder / "clauses.jsonl", heldout_rows(12))
    suite = folder / "suite.yaml"
    suite.write_text(SUITE)
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "POSTEVAL_HOME": str(folder / "posteval"),
        "POSTEVAL_DATABASE_URL": f"sqlite:///{folder / 'posteval.db'}",
        "POSTEVAL_CHECKPOINT_WAIT_S": str(WAIT_S),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # pick up triggered runs at once, not within 10 s
    }
    logs = folder / "logs.txt"
    with logs.open("wb") as sink:
        port = api_url.split(":")[-1].removesuffix("/api")
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
            env=env,
            cwd=folder,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        processes = [server]
        try:

            def healthy() -> bool:
                try:
                    return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            _poll("the Prefect server", healthy, logs=logs)
            command = [*_command("serve"), "--suite", str(suite), "--limit", "4", "--verbose"]
            processes.append(
                subprocess.Popen(
                    command, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

            def automation_ready() -> bool:
                found = httpx.post(f"{api_url}/automations/filter", json={}, timeout=5).json()
                return any(a["trigger"].get("expect") == [EVENT] for a in found)

            _poll("the served deployments' trigger", automation_ready, logs=logs)
            yield Served(api_url, env, env["POSTEVAL_DATABASE_URL"], suite, logs)
        finally:
            for process in reversed(processes):
                _stop(process)


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
    runs = served.finished(checkpoint, count=2)
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
        rows = session.execute(select(EvalRun, Checkpoint).join(Checkpoint)).all()
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
