"""What keeps the whole command fast, checked as behaviour (never as timings): the help and read commands
and a cached re-run import no model or metric library, the report no torch; `evaluate --profile` says
where the time went; a local Prefect server started once is reused by evaluations, whose flow runs it
records; flow runs on a server posteval started send no heartbeats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import heldout_rows, write_jsonl

HEAVY = ("torch", "transformers", "datasets", "sklearn")
SUITE = """\
name: speed
allow_incomplete: true
generation: {max_new_tokens: 4, stop: ["\\n"], batch_size: 8}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    metrics: [accuracy]
"""
# Runs the CLI in this interpreter, then prints its exit code and which of HEAVY it imported, as JSON on
# the last line (standalone_mode=False: the command's exit code is returned, not raised).
PROBE = """\
import json, sys
from posteval.cli import app
try:
    code = app(sys.argv[1:], prog_name="posteval", standalone_mode=False)
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code or 0, "heavy": sorted(m for m in {heavy} if m in sys.modules)}}))
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("POSTEVAL_DATABASE_URL", "PREFECT_API_URL")}
    return env | {"POSTEVAL_HOME": str(home), "PREFECT_HOME": str(home / "prefect")} | extra


def _in_process(home: Path, *args: str) -> tuple[list[str], str]:
    """Which of HEAVY the command imported, and what it printed; it must exit 0."""
    probe = PROBE.format(heavy=repr(HEAVY))
    done = subprocess.run(
        [sys.executable, "-c", probe, *args], env=_env(home), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    probe_result = json.loads(last)
    assert probe_result["code"] == 0, done.stderr
    return list(probe_result["heavy"]), "\n".join(printed)


def _imported(home: Path, *args: str) -> list[str]:
    return _in_process(home, *args)[0]


def _evaluate(
    home: Path, checkpoint: Path, *extra: str, api: str | None = None
) -> subprocess.CompletedProcess[str]:
    args = [
        sys.executable,
        "-m",
        "posteval.cli",
        "evaluate",
        str(checkpoint),
        "--suite",
        str(home / "suite.yaml"),
    ]
    env = _env(home, **({"PREFECT_API_URL": api} if api else {}))
    return subprocess.run([*args, *extra], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("speed")
    write_jsonl(home / "clauses.jsonl", heldout_rows(6))
    (home / "suite.yaml").write_text(SUITE)
    return home


@pytest.fixture(scope="module")
def local_server(home: Path) -> Iterator[str]:
    """`posteval server start` in ``home``; stopped (and checked stopped) afterwards."""
    started = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "server", "start"],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert started.returncode == 0, started.stderr
    url = json.loads((home / "prefect-server.json").read_text())["url"]
    assert started.stdout.startswith(f"Prefect server started at {url}")
    yield url
    stopped = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "server", "stop"],
        env=_env(home),
        capture_output=True,
        text=True,
    )
    assert stopped.stdout.startswith("Prefect server stopped")
    status = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "server", "status"],
        env=_env(home),
        capture_output=True,
        text=True,
    )
    assert (status.returncode, status.stdout.strip()) == (1, "no Prefect server running")


@pytest.fixture(scope="module")
def two_runs(home: Path, local_server: str, finetuned_checkpoint: Path) -> list[dict[str, object]]:
    """Two evaluations through the CLI against the local server (the second made anew with --force)."""
    shown = []
    for extra in ((), ("--force",)):
        done = _evaluate(home, finetuned_checkpoint, "--format", "json", *extra)
        assert done.returncode == 0, done.stderr
        shown.append(json.loads(done.stdout))
    return shown


def test_help_imports_no_model_or_metric_library(home: Path) -> None:
    assert _imported(home, "--help") == []
    assert _imported(home, "evaluate", "--help") == []


def test_read_commands_import_no_model_or_metric_library(
    home: Path, two_runs: list[dict[str, object]]
) -> None:
    first, second = (str(run["run_id"]) for run in two_runs)
    assert _imported(home, "runs", "list") == []
    assert _imported(home, "runs", "show", first) == []
    assert _imported(home, "history", "accuracy", "--model", "contracts-ft") == []
    assert _imported(home, "compare", first, second) == []


def test_a_cached_rerun_imports_no_model_or_metric_library(
    home: Path, two_runs: list[dict[str, object]], finetuned_checkpoint: Path
) -> None:
    """The same checkpoint and suite again: the checks and fingerprints the first run computed with torch,
    transformers and datasets are remembered (posteval.remembered), and every output is stored."""
    args = ("evaluate", str(finetuned_checkpoint), "--suite", str(home / "suite.yaml"), "--format", "json")
    heavy, printed = _in_process(home, *args)
    assert heavy == []
    assert json.loads(printed)["run_id"] in {run["run_id"] for run in two_runs}  # the stored run, found


def test_the_report_imports_no_torch(home: Path, two_runs: list[dict[str, object]]) -> None:
    run = str(two_runs[0]["run_id"])
    assert "torch" not in _imported(home, "report", run, "--out", str(home / "report.html"))
    assert 'id="metric-table"' in (home / "report.html").read_text()


def test_every_evaluation_is_a_flow_run_of_the_local_server(
    home: Path, local_server: str, two_runs: list[dict[str, object]]
) -> None:
    status = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "server", "status"],
        env=_env(home),
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0
    assert status.stdout.startswith(f"Prefect server running at {local_server}")
    flow_runs = httpx.post(f"{local_server}/flow_runs/filter", json={}).json()
    recorded = {(run["id"], run["state"]["type"]) for run in flow_runs}
    assert {(str(run["flow_run_id"]), "COMPLETED") for run in two_runs} <= recorded


PHASES = [
    "start-up",
    "imports (the pipeline)",
    "resolve and validate",
    "database upgrade",
    "Prefect server start (waiting)",
    "imports (Prefect, the flow)",
    "database writes",
    "database reads",
    "model load",
    "compute: clauses",
    "scoring and CIs",
    "training health",
    "regression gate",
    "Prefect (flow and task runs, API calls)",
    "output",
]


def test_profile_says_where_the_time_went(home: Path, local_server: str, base_checkpoint: Path) -> None:
    done = _evaluate(home, base_checkpoint, "--profile")
    assert done.returncode == 0, done.stderr
    table = done.stderr[done.stderr.index("where the time went") :].splitlines()
    rows = [line.strip("│┃ ").split("│") for line in table if line.startswith("│")]
    names = [row[0].strip() for row in rows]
    assert names == [*PHASES, "total"]
    seconds = [float(row[1]) for row in rows]
    assert all(s >= 0 for s in seconds)
    assert sum(seconds[:-1]) == pytest.approx(seconds[-1], abs=0.01 * len(seconds))
    assert rows[-1][2].strip() == "100%"


def test_flow_runs_on_a_server_posteval_started_send_no_heartbeats_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Heartbeats let a server notice a dead flow run; a temporary server dies with the run's process. On a
    configured API (None here: a team's server) and where the user set a frequency, Prefect's stays."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from posteval.cli.prefect_server import using_api

    url = "http://127.0.0.1:4200/api"
    default = PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()
    assert default == 180  # Prefect 3.9's default
    with using_api(url):
        assert (PREFECT_API_URL.value(), PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value()) == (url, None)
    with using_api(None):
        assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == default
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), using_api(url):
        assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == 60
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "180")  # Prefect's default, asked for by name
    with using_api(url):
        assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == default
    assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() == default


# A flow run that fails (as a failed gate does) against the temporary server posteval started, which the
# failure stops at once: Prefect must have sent the run's last logs first.
FAILED_FLOW = """\
from prefect import flow
from prefect.logging import get_run_logger
from posteval.cli.prefect_server import prepare_api, using_api

@flow
def failing() -> None:
    get_run_logger().info("about to fail")
    raise RuntimeError("the gate said no")

api = prepare_api()
try:
    with using_api(api()):
        failing()
except RuntimeError:
    api.close()
print("closed")
"""


def test_a_failed_flow_runs_logs_reach_the_temporary_server_before_it_stops(tmp_path: Path) -> None:
    env = _env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", FAILED_FLOW], env=env, capture_output=True, text=True, timeout=300
    )
    assert (done.returncode, done.stdout.strip()) == (0, "closed"), done.stderr
    assert "Error logging to API" not in done.stderr, done.stderr
