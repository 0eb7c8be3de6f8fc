"""Fault tests (issue 10): a SIGKILL mid-run, Ctrl-C and SIGTERM, a database restart mid-run, and
concurrent first use, each through the real `posteval evaluate` command in a subprocess.

What each asserts is the outcome a user sees: exit codes, one message line, one run per evaluation, one
stored output per example, no process left behind. Waiting loops have generous limits and only fail a
test when something hangs; no timing is asserted.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import heldout_rows, write_jsonl

pytestmark = pytest.mark.slow

SUITE = """\
name: faults
allow_incomplete: true
generation: {{max_new_tokens: {tokens}, stop: [], batch_size: 1}}
datasets:
  - name: clauses
    path: data.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    metrics: [exact_match]
"""


def _suite(folder: Path, rows: int, tokens: int) -> Path:
    write_jsonl(folder / "data.jsonl", heldout_rows(rows))
    path = folder / "suite.yaml"
    path.write_text(SUITE.format(tokens=tokens))
    return path


PREFECT_HOME = Path(tempfile.mkdtemp(prefix="posteval-faults-prefect-"))  # its database is migrated once


def _env(home: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEVAL_", "PREFECT_API"))}
    env |= {
        "POSTEVAL_HOME": str(home),
        "POSTEVAL_DATABASE_URL": database_url,
        "PREFECT_HOME": str(PREFECT_HOME),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # two shared cores can be slow
    }
    return env | extra


def _terminal_signals() -> None:  # pragma: no cover - runs in the child between fork and exec
    # As in a terminal's foreground job: Ctrl-C not ignored, even when this test process inherited it
    # ignored (a run started in the background by a script without job control; Python keeps it ignored).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _evaluate(checkpoint: Path, suite: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "posteval.cli", "evaluate", str(checkpoint), "--suite", str(suite), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a command started from a terminal
        preexec_fn=_terminal_signals,
    )


def _wait_for(
    condition: Callable[[], bool], what: str, limit_s: float = 240, proc: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the evaluation exited {proc.returncode} before {what}: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
                pytest.fail(f"gave up waiting for {what}: {proc.communicate()[1]}")
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _sqlite_count(path: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:  # not created or not migrated yet
        return 0


def _family(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _assert_gone(processes: list[psutil.Process]) -> None:
    def gone() -> bool:
        alive = []
        for p in processes:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return not alive

    _wait_for(gone, f"child processes {[p.pid for p in processes]} to exit", limit_s=30)


def test_sigkill_mid_run_then_the_same_command_resumes(tmp_path: Path, base_checkpoint: Path) -> None:
    db = tmp_path / "posteval.db"
    suite = _suite(tmp_path, rows=40, tokens=24)
    env = _env(tmp_path, f"sqlite:///{db}")
    first = _evaluate(base_checkpoint, suite, env)
    at_batch = random.randint(1, 30)
    _wait_for(
        lambda: _sqlite_count(db, "SELECT count(*) FROM predictions") >= at_batch, "model outputs", proc=first
    )
    children = _family(first)
    assert children, "the evaluation runs Prefect's temporary server as a child"
    first.kill()
    first.wait()
    stored = _sqlite_count(db, "SELECT count(*) FROM predictions")
    assert 0 < stored < 40
    _assert_gone(children)  # no orphaned Prefect server

    second = _evaluate(base_checkpoint, suite, env)
    _out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert _sqlite_count(db, "SELECT count(*) FROM eval_runs") == 1
    assert _sqlite_count(db, "SELECT count(*) FROM eval_runs WHERE status = 'succeeded'") == 1
    assert _sqlite_count(db, "SELECT count(*) FROM predictions") == 40
    assert _sqlite_count(db, "SELECT count(DISTINCT example_key) FROM predictions") == 40
    assert _sqlite_count(db, "SELECT count(*) FROM example_scores") == 40


@pytest.mark.parametrize(
    ("sig", "code", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_an_interrupt_stops_the_run_cleanly(
    tmp_path: Path, base_checkpoint: Path, sig: signal.Signals, code: int, name: str
) -> None:
    db = tmp_path / "posteval.db"
    suite = _suite(tmp_path, rows=40, tokens=24)
    proc = _evaluate(base_checkpoint, suite, _env(tmp_path, f"sqlite:///{db}"))
    _wait_for(lambda: _sqlite_count(db, "SELECT count(*) FROM predictions") >= 2, "model outputs", proc=proc)
    children = _family(proc)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole foreground process group
    else:
        proc.send_signal(sig)
    # A hang shows as a timeout here; a prompt exit is the expected behaviour, not a measured one.
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    said = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1 and said[0].startswith(f"interrupted by {name}: run "), err
    assert said[0].endswith("marked failed (interrupted); evaluate again to resume from its stored outputs")
    assert "Traceback" not in err and "ConnectError" not in err
    assert (
        _sqlite_count(db, "SELECT count(*) FROM eval_runs WHERE status = 'failed' AND error = 'interrupted'")
        == 1
    )
    _assert_gone(children)


@pytest.fixture(scope="module")
def shared_prefect_api() -> Iterator[str]:
    """One Prefect API server for concurrent evaluations (each would otherwise start its own)."""
    from prefect.server.api.server import SubprocessASGIServer

    # Its own port: SubprocessASGIServer() without one is the singleton prefect_test_harness also uses.
    server = SubprocessASGIServer(port=_free_port())
    server.start(timeout=180)
    try:
        yield server.api_url
    finally:
        server.stop()


def _concurrent(
    url: str, n: int, tmp_path: Path, checkpoint: Path, api: str, count: Callable[[str], int]
) -> None:
    suite = _suite(tmp_path, rows=6, tokens=4)
    env = _env(tmp_path, url, PREFECT_API_URL=api)
    procs = [_evaluate(checkpoint, suite, env, "--model", f"model-{i}") for i in range(n)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, [err for _, err in results]
    assert count("SELECT count(*) FROM eval_runs WHERE status = 'succeeded'") == n
    assert count("SELECT count(*) FROM checkpoints") == 1
    assert count("SELECT count(*) FROM predictions") == 6  # the outputs are shared, stored once
    assert count("SELECT count(*) FROM example_scores") == 6 * n


def test_four_concurrent_evaluations_on_a_fresh_sqlite_file(
    tmp_path: Path, base_checkpoint: Path, shared_prefect_api: str
) -> None:
    db = tmp_path / "fresh.db"
    _concurrent(
        f"sqlite:///{db}",
        4,
        tmp_path,
        base_checkpoint,
        shared_prefect_api,
        lambda sql: _sqlite_count(db, sql),
    )


def _pg_count(url: str) -> Callable[[str], int]:
    from sqlalchemy import create_engine, text

    def count(sql: str) -> int:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql)).scalar_one())
        except Exception:
            return 0
        finally:
            engine.dispose()

    return count


@pytest.mark.postgres
def test_eight_concurrent_evaluations_on_a_fresh_postgres_database(
    tmp_path: Path, base_checkpoint: Path, shared_prefect_api: str
) -> None:
    from tests.conftest import _postgres_database

    for url in _postgres_database():
        _concurrent(url, 8, tmp_path, base_checkpoint, shared_prefect_api, _pg_count(url))


# --- a PostgreSQL cluster of the test's own, restarted mid-run ---------------------------------------


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_cluster() -> Iterator[tuple[str, Callable[[], None]]]:
    """A throwaway PostgreSQL cluster on a free port (run as the postgres user when we are root); yields
    its URL and a function that restarts it with two seconds of downtime."""
    bin_dir = _pg_bin()
    folder = Path(tempfile.mkdtemp(prefix="posteval-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"

    def pg_ctl(*args: str) -> None:
        # -l: the server writes to a log file, so it holds none of our pipes open
        command = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), *args]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    pg_ctl("-o", options, "-w", "start")

    def restart() -> None:
        pg_ctl("-m", "fast", "-w", "stop")
        time.sleep(2)  # the outage the run has to survive
        pg_ctl("-o", options, "-w", "start")

    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", restart
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.postgres
def test_a_database_restart_mid_run_is_survived(
    tmp_path: Path, base_checkpoint: Path, own_cluster: tuple[str, Callable[[], None]]
) -> None:
    url, restart = own_cluster
    count = _pg_count(url)
    suite = _suite(tmp_path, rows=40, tokens=24)
    proc = _evaluate(base_checkpoint, suite, _env(tmp_path, url))
    _wait_for(lambda: count("SELECT count(*) FROM predictions") >= 3, "model outputs", proc=proc)
    restart()
    assert proc.poll() is None, "the evaluation was still running when the database came back"
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert count("SELECT count(*) FROM eval_runs WHERE status = 'succeeded'") == 1
    assert count("SELECT count(*) FROM predictions") == 40
    assert count("SELECT count(DISTINCT example_key) FROM predictions") == 40
