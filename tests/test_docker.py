"""docker/: the image and the compose stack, built, started and used as a team would.

The static tests read docker/compose.yaml and docker/Dockerfile (no daemon needed): the compose file is the
one the README documents and must also run on Debian's docker-compose 1.29; the Dockerfile's defaults are
the public ones. The `docker` test builds the images with docker/build-local.sh (a local Debian base: this
machine reaches no image registry), starts the stack on free host ports, emits one
posteval.training.completed event for a tiny checkpoint on a bind-mounted folder, waits until the run is
stored as succeeded in the stack's PostgreSQL, reads it back with `posteval runs list` from the host, and
tears everything down. Under CI=true it fails, never skips, when the daemon cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LOCAL_BASE = "posteval-base:bookworm"
LOCAL_POSTGRES = "posteval-postgres:bookworm"
IMAGE = "posteval:cpu"
BUILD_TIMEOUT_S = 1800  # the first build (debootstrap, torch, every dependency); a cached one takes seconds
RUN_TIMEOUT_S = 300
MODEL = "tiny-docker"
SUITE = """\
name: docker-smoke
allow_incomplete: true   # a smoke test of the stack, not of the suite's completeness
generation: {max_new_tokens: 4, stop: ["\\n"], batch_size: auto}
datasets:
  - name: contract-type
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    key: id
    labels: [lease, nda, employment]
    metrics: [accuracy]
"""


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


# --- the files, without a daemon -----------------------------------------------------------------------


def test_compose_file_uses_no_v2_only_keys_or_nested_variables() -> None:
    """Debian's docker-compose 1.29 rejects a top-level `name:` and cannot expand ${A:-${B}}."""
    compose = _compose()
    assert set(compose) <= {"services", "volumes", "networks", "x-posteval"}
    text = COMPOSE_FILE.read_text()
    assert re.findall(r"\$\{[^}]*\$\{", text) == []


def test_compose_publishes_configurable_ports_and_named_volumes() -> None:
    services = _compose()["services"]
    assert services["postgres"]["ports"] == ["${POSTEVAL_POSTGRES_PORT:-5432}:5432"]
    assert services["prefect-server"]["ports"] == ["${POSTEVAL_PREFECT_PORT:-4200}:4200"]
    assert services["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    assert set(_compose()["volumes"]) == {"postgres-data", "posteval-data", "huggingface"}
    worker_volumes = services["worker"]["volumes"]
    assert worker_volumes == [
        "${POSTEVAL_CHECKPOINTS:-./checkpoints}:/checkpoints",
        "${POSTEVAL_SUITES:-../examples}:/suites:ro",
        "posteval-data:/data/posteval",
        "${POSTEVAL_HF_CACHE:-huggingface}:/data/huggingface",
    ]
    for name in ("postgres", "prefect-server", "worker", "worker-gpu"):
        assert "healthcheck" in services[name], name
    assert services["worker"]["depends_on"] == {"deploy": {"condition": "service_completed_successfully"}}
    assert services["deploy"]["depends_on"] == {"prefect-server": {"condition": "service_healthy"}}
    assert "posteval db upgrade" in services["deploy"]["command"][-1]


def test_cpu_and_cuda_workers_differ_only_in_the_torch_build_argument() -> None:
    services = _compose()["services"]
    cpu, gpu = services["worker"], services["worker-gpu"]
    assert {**cpu["build"]["args"], "TORCH_VARIANT": "cuda"} == gpu["build"]["args"]
    assert gpu["image"] == "posteval:cuda" and cpu["image"] == "posteval:${TORCH_VARIANT:-cpu}"
    assert cpu["command"] == gpu["command"] and cpu["volumes"] == gpu["volumes"]
    assert gpu["profiles"] == ["gpu"]


def test_dockerfile_defaults_are_public_and_nothing_of_this_machine_is_baked_in() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    for local in ("/opt/wheels", "/opt/pypi", "/etc/ssl", "ca-certificates.crt", "127.0.0.1", "constraints"):
        assert local not in text, local
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    torch_at = next(i for i, line in enumerate(lines) if "torch==" in line)
    copy_at = next(i for i, line in enumerate(lines) if line.startswith("COPY posteval"))
    assert torch_at < copy_at, "the torch layer must come before the project COPY (layer caching)"
    assert "pip install ." in text and "USER posteval" in text


# --- the stack, with a daemon --------------------------------------------------------------------------


def _run(
    cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done


def _unavailable() -> str | None:
    """Why the docker test cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (.ci/run installs Debian's docker.io)"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"the Docker daemon cannot be reached: {info.stderr.strip()[-300:]}"
    if _compose_command() is None:
        return "neither `docker compose` (v2) nor docker-compose is installed"
    base_built = (
        subprocess.run(["docker", "image", "inspect", LOCAL_BASE], capture_output=True).returncode == 0
    )
    if not base_built and shutil.which("debootstrap") is None:
        return f"debootstrap is needed to build {LOCAL_BASE} (apt-get install debootstrap)"
    return None


def _compose_command() -> list[str] | None:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def docker_available() -> None:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """The trainers' and workers' shared storage: checkpoints/ and suites/, readable by the image's user."""
    folder = Path(tempfile.mkdtemp(prefix="posteval-docker-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    found = {
        "containers": _run(["docker", "ps", "-a", "-q", "--filter", label]).stdout.split(),
        "networks": _run(["docker", "network", "ls", "-q", "--filter", label]).stdout.split(),
        "volumes": _run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split(),
    }
    return {kind: ids for kind, ids in found.items() if ids}


def _posteval(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "posteval.cli", *args], env=env, timeout=120)


def _wait_for_stored_run(env: dict[str, str], logs: Any) -> list[dict[str, Any]]:
    """Poll the stack's PostgreSQL (through the host's CLI) until the event's run is stored as finished."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = json.loads(_posteval("runs", "list", "--model", MODEL, "-f", "json", env=env).stdout)
        if runs and runs[0]["status"] in {"succeeded", "failed"}:
            return runs
        time.sleep(3)
    raise AssertionError(f"no finished run for {MODEL} after {RUN_TIMEOUT_S}s: {runs}\n{logs()}")


def _wait_for_health(project: str, services: tuple[str, ...], timeout_s: float = 120) -> dict[str, str]:
    """Each service's health status once all are healthy (or as they stand after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = {}
        for service in services:
            ids = _run(
                [
                    "docker",
                    "ps",
                    "-q",
                    "--filter",
                    f"label=com.docker.compose.project={project}",
                    "--filter",
                    f"label=com.docker.compose.service={service}",
                ]
            ).stdout.split()
            health = [
                _run(["docker", "inspect", "--format", "{{.State.Health.Status}}", cid]).stdout.strip()
                for cid in ids
            ]
            status[service] = ",".join(health) or "missing"
        if all(value == "healthy" for value in status.values()) or time.monotonic() > deadline:
            return status
        time.sleep(3)


@pytest.mark.docker
@pytest.mark.usefixtures("docker_available")
def test_the_stack_evaluates_a_checkpoint_from_a_training_completed_event(shared_folder: Path) -> None:
    from posteval.toymodel import build_base_model

    # 1. the images: the local base (debootstrap, once), PostgreSQL on it, the posteval image (cached layers)
    _run(["bash", str(ROOT / "docker" / "build-local.sh"), "cpu"], timeout=BUILD_TIMEOUT_S)
    user = _run(["docker", "run", "--rm", IMAGE, "id", "-u"]).stdout.strip()
    assert user != "0", "the worker image must not run as root"
    assert "Usage: posteval" in _run(["docker", "run", "--rm", IMAGE, "posteval", "--help"]).stdout
    installed = _run(
        [
            "docker",
            "run",
            "--rm",
            "-w",
            "/app",  # where flow runs start (prefect.yaml's pull step): nothing there may shadow the package
            IMAGE,
            "python",
            "-c",
            "import posteval, posteval.flows.post_training; print(posteval.__file__)",
        ]
    )
    assert installed.stdout.strip() == "/opt/venv/lib/python3.11/site-packages/posteval/__init__.py"
    history = _run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE]).stdout
    config = _run(["docker", "image", "inspect", "--format", "{{json .Config.Env}}", IMAGE]).stdout
    for local in ("127.0.0.1", "ca-certificates.crt", "/opt/wheels", "/run/secrets/ca-bundle"):
        assert local not in history and local not in config, local
    for setting in ("PIP_CERT", "PIP_CONFIG_FILE", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PROXY"):
        assert setting not in config.upper(), config
    pip_config = _run(["docker", "run", "--rm", IMAGE, "pip", "config", "list"]).stdout
    assert "cert" not in pip_config and "find-links" not in pip_config, pip_config

    # 2. the shared storage: a tiny checkpoint and a one-dataset suite, as the workers will see them
    build_base_model(shared_folder / "checkpoints" / "tiny")
    suites = shared_folder / "suites"
    suites.mkdir()
    clauses = (ROOT / "examples" / "contracts" / "heldout.jsonl").read_text().splitlines()[:12]
    (suites / "clauses.jsonl").write_text("\n".join(clauses) + "\n")
    (suites / "suite.yaml").write_text(SUITE)
    for path in shared_folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)

    # 3. the stack, on free host ports (5432 and 4200 are this machine's own)
    project = f"posteval-test-{secrets.token_hex(4)}"
    pg_port, prefect_port = _free_port(), _free_port()
    stack_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COMPOSE_", "PREFECT_", "POSTEVAL_"))
    }
    stack_env |= {
        "POSTEVAL_BASE_IMAGE": LOCAL_BASE,
        "POSTGRES_IMAGE": LOCAL_POSTGRES,
        "POSTEVAL_POSTGRES_PORT": str(pg_port),
        "POSTEVAL_PREFECT_PORT": str(prefect_port),
        "POSTEVAL_CHECKPOINTS": str(shared_folder / "checkpoints"),
        "POSTEVAL_SUITES": str(suites),
        "HF_HUB_OFFLINE": "1",
    }
    compose = [*(_compose_command() or []), "-p", project, "-f", str(COMPOSE_FILE)]

    def logs() -> str:
        done = _run([*compose, "logs", "--no-color", "--tail", "60"], env=stack_env, check=False)
        return done.stdout[-8000:]

    host_env = {
        **os.environ,
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "POSTEVAL_DATABASE_URL": f"postgresql+psycopg://posteval:posteval@127.0.0.1:{pg_port}/posteval",
    }
    try:
        up = _run([*compose, "up", "-d", "--no-build"], env=stack_env, timeout=600, check=False)
        assert up.returncode == 0, f"compose up failed:\n{up.stderr[-4000:]}\n{logs()}"
        assert set(_leftovers(project)) == {"containers", "networks", "volumes"}  # what down must remove

        # 4. the event, from the host, with the paths the workers see: refused as this machine sees them,
        # sent with --no-check
        refused = _run(
            [
                sys.executable,
                "-m",
                "posteval.cli",
                "trigger",
                "/checkpoints/tiny",
                "--suite",
                "/suites/suite.yaml",
            ],
            env=host_env,
            check=False,
        )
        assert (refused.returncode, refused.stderr.strip()) == (
            2,
            "error: /suites/suite.yaml: suite file not found",
        )
        _posteval(
            "trigger",
            "/checkpoints/tiny",
            "--suite",
            "/suites/suite.yaml",
            "--model",
            MODEL,
            "--no-check",
            env=host_env,
        )
        runs = _wait_for_stored_run(host_env, logs)
        assert [(run["status"], run["trigger"], run["checkpoint"], run["suite"]) for run in runs] == [
            ("succeeded", "event", "/checkpoints/tiny", "docker-smoke")
        ], f"{runs}\n{logs()}"

        # 5. the long-running services report healthy through their own health checks
        assert _wait_for_health(project, ("postgres", "prefect-server", "worker")) == {
            "postgres": "healthy",
            "prefect-server": "healthy",
            "worker": "healthy",
        }, logs()

        # 6. the same row, read straight from the stack's PostgreSQL with psycopg
        import psycopg

        with psycopg.connect(f"postgresql://posteval:posteval@127.0.0.1:{pg_port}/posteval") as conn:
            stored = conn.execute("SELECT id, status FROM eval_runs").fetchall()
        assert stored == [(runs[0]["run_id"], "succeeded")]
    finally:
        _run(
            [*compose, "down", "--volumes", "--remove-orphans", "--timeout", "10"], env=stack_env, timeout=300
        )
    assert _leftovers(project) == {}
