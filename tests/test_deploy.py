"""The team deployment, from nothing: a copy of the repository, `prefect deploy --all` against the session's
Prefect server, a process worker started somewhere else, and one training-completed event evaluated end to
end. The worker finds the code through the deployment's POSTEVAL_PROJECT_DIR (prefect.yaml's pull step),
which `prefect deploy` set to the folder it ran in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from posteval.automation import emit_training_completed, training_completed
from posteval.db.models import EvalRun
from tests.helpers import heldout_rows, write_jsonl
from tests.servers import PrefectServer, poll, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# What a clean clone does not have: environments, caches and build output.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
)
SUITE = """\
name: deployed
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 6, stop: ["\\n"], batch_size: 8}
datasets:
  - {name: clauses, path: clauses.jsonl, key: id, prompt: "Clause: {text}\\nType:", reference: label,
     labels: [lease, nda, employment], metrics: [accuracy]}
"""
DEPLOYMENT = "posteval-training-completed/on-training-completed"
PULL = [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $POSTEVAL_PROJECT_DIR }}"}}]


def _prefect(*args: str, cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def test_prefect_deploy_from_a_copy_of_the_repository_evaluates_an_event_on_a_process_worker(
    prefect_server: PrefectServer, finetuned_checkpoint: Path, tmp_path: Path
) -> None:
    project = tmp_path / "posteval-checkout"
    shutil.copytree(ROOT, project, ignore=NOT_IN_A_CLONE)
    suites = tmp_path / "suites"
    suites.mkdir()
    write_jsonl(suites / "clauses.jsonl", heldout_rows(8))
    (suites / "suite.yaml").write_text(SUITE)
    database = tmp_path / "posteval.db"
    env = {
        **prefect_server.env,
        "POSTEVAL_HOME": str(tmp_path / "home"),
        "POSTEVAL_DATABASE_URL": f"sqlite:///{database}",
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick the flow run up at once
    }
    env.pop("POSTEVAL_PROJECT_DIR", None)  # the default: the folder `prefect deploy` runs in
    migrate = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    _prefect("work-pool", "create", "posteval", "--type", "process", cwd=project, env=env)
    _prefect("--no-prompt", "deploy", "--all", cwd=project, env=env)

    api = prefect_server.api_url
    deployment = httpx.get(f"{api}/deployments/name/{DEPLOYMENT}", timeout=10).json()
    assert deployment["pull_steps"] == PULL
    assert deployment["job_variables"]["env"]["POSTEVAL_PROJECT_DIR"] == str(project)
    assert deployment["work_pool_name"] == "posteval"

    elsewhere = tmp_path / "worker-cwd"  # the worker does not start in the project: the pull step moves there
    elsewhere.mkdir()
    worker = prefect_server.start(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "posteval", "--limit", "1"],
        elsewhere,
        env,
    )
    try:
        checkpoint = str(finetuned_checkpoint.resolve())
        emit_training_completed(training_completed(checkpoint, suites / "suite.yaml"), api_url=api)

        def finished() -> dict[str, Any] | None:
            found = httpx.post(
                f"{api}/flow_runs/filter",
                json={"deployments": {"id": {"any_": [deployment["id"]]}}, "limit": 50},
                timeout=10,
            ).json()
            mine = [r for r in found if r["parameters"].get("suite") == str(suites / "suite.yaml")]
            done = [r for r in mine if r["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}]
            return done[0] if done else None

        run = poll("the worker's flow run", finished, timeout=600, logs=prefect_server.logs)
        assert run["state"]["type"] == "COMPLETED", run["state"]["message"]

        # The flow run process ships its log in batches, also after its state is set: read until posteval's
        # line arrives, with the worker (and so the flow run's process) still alive.
        def logged() -> bool:
            found = httpx.post(
                f"{api}/logs/filter",
                json={"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200},
                timeout=10,
            ).json()
            return any(m["message"].startswith("training of contracts-ft completed at step ") for m in found)

        poll("posteval's line in the flow run's log", logged, timeout=60, logs=prefect_server.logs)
    finally:
        stop(worker)
    engine = create_engine(f"sqlite:///{database}")
    with Session(engine) as session:
        stored = session.scalars(select(EvalRun)).all()
    engine.dispose()
    assert [(r.status, r.trigger, r.model_name) for r in stored] == [("succeeded", "event", "contracts-ft")]
