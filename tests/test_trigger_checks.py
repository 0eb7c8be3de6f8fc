"""Triggers that cannot succeed are refused or end early, and the ones that fail stay in the history.

`posteval trigger` checks what it can before emitting (the suite, the checkpoint's parent folder); the
flow's wait for a checkpoint ends once neither the folder nor its parent changes; a trigger that failed
before its run row existed is kept and listed with the failed runs. Nothing here needs a Prefect server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from posteval.automation import FLOW_RUN_LOGGING, training_completed, wait_for_checkpoint
from posteval.db import queries
from posteval.errors import CheckpointError
from posteval.pipeline import record_trigger_failure
from posteval.settings import Settings
from tests.helpers import small_suite

ROOT = Path(__file__).resolve().parents[1]


def _trigger(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A server address that nothing answers: every case here must be refused before the event is sent.
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(cwd / "prefect")}
    return subprocess.run(
        [sys.executable, "-m", "posteval.cli", "trigger", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_trigger_refuses_a_missing_suite_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _trigger(str(tmp_path / "checkpoint-5"), "--suite", "no-such.yaml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == f"error: {tmp_path / 'no-such.yaml'}: suite file not found"


def test_trigger_refuses_a_suite_that_does_not_validate(tmp_path: Path) -> None:
    suite = small_suite(tmp_path, metrics="[no_such_metric]")
    result = _trigger(str(tmp_path / "checkpoint-5"), "--suite", str(suite), cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {suite}: ") and "no_such_metric" in line


def test_trigger_refuses_a_checkpoint_whose_parent_folder_does_not_exist(tmp_path: Path) -> None:
    suite = small_suite(tmp_path)
    checkpoint = tmp_path / "no-such-run" / "checkpoint-5"
    result = _trigger(str(checkpoint), "--suite", str(suite), cwd=tmp_path)
    assert result.returncode == 2
    # the one error line, after the suite's own warning that it is a focused suite (allow_incomplete)
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: checkpoint {checkpoint}: its parent folder {checkpoint.parent} does not exist "
        "(expected the folder the training job writes checkpoints into)"
    )


def test_no_check_sends_paths_only_the_workers_see_and_hub_checkpoints_need_no_folder(tmp_path: Path) -> None:
    """--no-check skips both checks (it gets as far as the server, which answers nothing here: exit 3); a
    hf:// checkpoint has no parent folder to check, so it too gets as far as the server."""
    unseen = _trigger(
        "/checkpoints/run-7/checkpoint-5", "--suite", "/suites/s.yaml", "--no-check", cwd=tmp_path
    )
    hub = _trigger("hf://acme/tiny@main", "--suite", str(small_suite(tmp_path)), cwd=tmp_path)
    event = training_completed("hf://acme/tiny@main", tmp_path / "s.yaml", base_model="hf://acme/base")
    assert (event.checkpoint, event.model_name, event.base_model) == (
        "hf://acme/tiny@main",
        "tiny",
        "hf://acme/base",
    )
    refused = (
        "error: cannot send posteval.training.completed to the Prefect server at http://127.0.0.1:9/api: "
    )
    for result in (unseen, hub):
        assert result.returncode == 3, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(refused)


def test_the_idle_limit_is_a_setting_of_120_seconds_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().checkpoint_idle_s, Settings().checkpoint_wait_s) == (120.0, 600.0)
    monkeypatch.setenv("POSTEVAL_CHECKPOINT_IDLE_S", "7.5")
    assert Settings().checkpoint_idle_s == 7.5


def test_the_wait_ends_early_when_neither_the_folder_nor_its_parent_changes(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-5"  # a typo: nothing will ever write it
    with pytest.raises(CheckpointError) as raised:
        wait_for_checkpoint(str(folder), timeout_s=60, idle_s=0.5, poll_s=0.1)
    assert str(raised.value) == (
        f"checkpoint {folder} is not complete and neither it nor its parent folder changed for 0.5s: "
        "the folder does not exist yet (set POSTEVAL_CHECKPOINT_IDLE_S to wait longer for a slow writer)"
    )


def test_a_folder_still_being_written_is_waited_for_past_the_idle_limit(
    base_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    shutil.copy(base_checkpoint / "config.json", folder)
    stop = threading.Event()

    def write_slowly() -> None:  # a file grows every 0.2 s for 2 s, four times the idle limit
        with (folder / "optimizer.pt").open("ab") as sink:
            for _ in range(10):
                sink.write(b"x" * 10)
                sink.flush()
                if stop.wait(0.2):
                    return
        shutil.copy(base_checkpoint / "model.safetensors", folder)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        wait_for_checkpoint(str(folder), timeout_s=60, idle_s=0.5, poll_s=0.1, settle_s=0.3)
    finally:
        stop.set()
        writer.join()
    assert (folder / "model.safetensors").is_file()


def test_a_trigger_failure_is_listed_with_the_failed_runs(db_url: str) -> None:
    failure_id = record_trigger_failure(
        "SuiteError: /s/missing.yaml: suite file not found",
        flow_run_id="3f1c0c1e-8d4e-4d0e-9a57-1d2f0c5b7e11",
        checkpoint="/ckpt/run-3/checkpoint-9",
        suite="/s/missing.yaml",
        model_name="run-3",
        step=9,
        database_url=db_url,
    )
    failed = queries.runs(status="failed", limit=1000, database_url=db_url).set_index("run_id")
    row = failed.loc[failure_id]
    assert (row["model"], row["checkpoint"], row["step"], row["suite"], row["trigger"], row["status"]) == (
        "run-3",
        "/ckpt/run-3/checkpoint-9",
        9,
        "/s/missing.yaml",
        "event",
        "failed",
    )
    assert row["error"] == "SuiteError: /s/missing.yaml: suite file not found"
    assert failure_id not in set(queries.runs(status="succeeded", limit=1000, database_url=db_url)["run_id"])
    assert failure_id in set(queries.runs(model="run-3", database_url=db_url)["run_id"])


def test_prefect_yaml_takes_the_working_directory_and_logging_from_the_deployment_environment() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [pull] = config["pull"]
    assert pull == {
        "prefect.deployments.steps.set_working_directory": {"directory": "{{ $POSTEVAL_PROJECT_DIR }}"}
    }
    assert "/app" not in (ROOT / "prefect.yaml").read_text().split("deployments:", 1)[1]
    for deployment in config["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env == {"POSTEVAL_PROJECT_DIR": "{{ project.stdout }}", **FLOW_RUN_LOGGING}


def _notify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTEVAL_NOTIFY_")}
    env |= {"PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(cwd / "prefect")}
    return subprocess.run(
        [sys.executable, "-m", "posteval.cli", "notify", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: posteval notify: give --webhook URL or --block TYPE/NAME"),
        (
            ("--webhook", "ftp://hooks/x"),
            "error: webhook URL 'ftp://hooks/x': expected an http:// or https:// URL",
        ),
        (
            ("--webhook", "https://hooks/x", "--block", "slack-webhook/team"),
            "error: give a webhook URL or a notification block, not both",
        ),
        (
            ("--block", "team"),
            "error: notification block 'team': expected BLOCK-TYPE/NAME, e.g. slack-webhook/team-alerts",
        ),
    ],
)
def test_notify_refuses_what_cannot_notify_before_touching_the_server(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    result = _notify(*args, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip()) == (2, message)
