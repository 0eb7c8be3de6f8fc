"""Safe history (issue 10): schema guarantees, the run lease, guarded status changes, transient database
errors, NUL bytes, short errors and concurrent first use, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from posteval.db import claims, repo
from posteval.db.engine import session_scope
from posteval.db.migrate import alembic_config
from posteval.db.models import (
    Baseline,
    Checkpoint,
    EvalRun,
    ExampleScore,
    Metric,
    Prediction,
    utcnow,
)
from posteval.db.retry import is_transient, retry_transient
from posteval.db.types import MARKER, decode_text, encode_text
from posteval.errors import DatabaseError, RunnerError, RunTakenOver, short_error
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.suite import load_suite
from posteval.pipeline import register_run
from tests.helpers import small_suite


def _run(session, *, status: str = "pending") -> str:  # type: ignore[no-untyped-def]
    ckpt = repo._get_or_create(session, Checkpoint, {"fingerprint": "c" * 64}, path="/c", model_name="m")
    suite = repo.upsert_suite(session, "s", "s" * 64, "name: s\n")
    run, _ = claims.get_or_create_run(
        session,
        checkpoint_id=ckpt.id,
        suite_id=suite.id,
        model_name="m",
        trigger="manual",
        idempotency_key=uuid.uuid4().hex,
        flow_run_id=None,
    )
    session.flush()
    return str(run.id)


@pytest.fixture
def run_id(db_url: str) -> str:
    with session_scope(db_url) as session:
        return _run(session)


def _status(db_url: str, run_id: str) -> tuple[str, str | None, str | None]:
    with session_scope(db_url) as session:
        run = session.get_one(EvalRun, run_id)
        return run.status, run.claim_id, run.error


# --- schema guarantees (migration 0004) -------------------------------------------------------------


def test_an_unknown_run_status_is_refused_by_the_database(db_url: str, run_id: str) -> None:
    with pytest.raises(IntegrityError), session_scope(db_url) as session:
        session.execute(update(EvalRun).where(EvalRun.id == run_id).values(status="done"))


def test_an_unknown_gate_status_is_refused_by_the_database(db_url: str, run_id: str) -> None:
    with pytest.raises(IntegrityError), session_scope(db_url) as session:
        session.execute(update(EvalRun).where(EvalRun.id == run_id).values(gate_status="maybe"))


@pytest.mark.parametrize("both", [True, False])
def test_a_baseline_names_exactly_one_of_run_or_checkpoint(db_url: str, run_id: str, both: bool) -> None:
    with pytest.raises(IntegrityError), session_scope(db_url) as session:
        ckpt = session.get_one(EvalRun, run_id).checkpoint_id
        session.execute(
            insert(Baseline).values(
                model_name=f"m-{both}",
                suite_name="s",
                run_id=run_id if both else None,
                checkpoint_id=ckpt if both else None,
                created_at=utcnow(),
            )
        )


def test_an_example_score_needs_its_metric_and_goes_with_it(db_url: str, run_id: str) -> None:
    with session_scope(db_url) as session:
        dataset = repo.upsert_dataset(session, f"d-{run_id[:6]}", "d" * 64, 1, "d.jsonl")
        dataset_id = dataset.id
    with pytest.raises(IntegrityError), session_scope(db_url) as session:
        session.add(
            ExampleScore(run_id=run_id, dataset_id=dataset_id, metric="acc", example_key="k", value=1.0)
        )
    with session_scope(db_url) as session:
        session.add(
            Metric(
                run_id=run_id,
                dataset_id=dataset_id,
                name="acc",
                value=1.0,
                n=1,
                higher_is_better=True,
                signature="s",
                details={},
            )
        )
        session.flush()
        session.add(
            ExampleScore(run_id=run_id, dataset_id=dataset_id, metric="acc", example_key="k", value=1.0)
        )
    with session_scope(db_url) as session:
        session.execute(delete(Metric).where(Metric.run_id == run_id))
    with session_scope(db_url) as session:
        left = session.scalar(
            select(func.count()).select_from(ExampleScore).where(ExampleScore.run_id == run_id)
        )
    assert left == 0


# --- the lease and guarded status changes -----------------------------------------------------------


def test_a_held_run_is_refused_until_its_heartbeat_is_older_than_the_lease(db_url: str, run_id: str) -> None:
    with session_scope(db_url) as session:
        assert claims.claim_run(session, run_id, "a" * 32, claimed_by="elsewhere:1")
        fresh = utcnow() - timedelta(seconds=120)
        assert not claims.claim_run(session, run_id, "b" * 32, stale_before=fresh)
        session.execute(
            update(EvalRun).where(EvalRun.id == run_id).values(heartbeat_at=utcnow() - timedelta(seconds=121))
        )
        assert claims.claim_run(session, run_id, "b" * 32, stale_before=fresh)
    assert _status(db_url, run_id)[:2] == ("running", "b" * 32)


def test_a_retried_claim_with_the_same_token_succeeds(db_url: str, run_id: str) -> None:
    with session_scope(db_url) as session:
        assert claims.claim_run(session, run_id, "a" * 32)
        assert claims.claim_run(session, run_id, "a" * 32)
        assert not claims.claim_run(session, run_id, "b" * 32)


def test_a_holder_whose_process_is_gone_is_taken_over_at_once(db_url: str, run_id: str) -> None:
    from posteval.pipeline.registration import _holder_gone

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with session_scope(db_url) as session:
        assert claims.claim_run(session, run_id, "a" * 32, claimed_by=f"{claims.here()}:{dead.pid}")
        run = session.get_one(EvalRun, run_id)
        session.refresh(run)
        assert _holder_gone(run, None) is True
        assert _holder_gone(run.__class__(claimed_by=claims.holder(), flow_run_id=None), None) is False
        assert _holder_gone(run.__class__(claimed_by="otherhost:1", flow_run_id="f"), lambda _: True) is True
        assert _holder_gone(run.__class__(claimed_by="otherhost:1", flow_run_id="f"), lambda _: None) is False


def test_a_late_failure_never_overwrites_a_success_or_a_takeover(db_url: str, run_id: str) -> None:
    with session_scope(db_url) as session:
        claims.claim_run(session, run_id, "a" * 32)
        assert claims.claim_run(session, run_id, "b" * 32, take_over=True)
        assert not claims.mark_failed(session, run_id, "late", "a" * 32)  # the old holder's retry
        assert not claims.heartbeat(session, run_id, "a" * 32)
        with pytest.raises(RunTakenOver):
            repo.hold_for_persist(session, run_id, "a" * 32)
        assert repo.hold_for_persist(session, run_id, "b" * 32)
        repo.mark_succeeded(session, run_id)
        session.flush()
        assert not repo.hold_for_persist(session, run_id, "b" * 32)  # a persist retried after commit
        assert not claims.mark_failed(session, run_id, "late", "b" * 32)
        assert not claims.claim_run(session, run_id, "c" * 32, take_over=True)
    assert _status(db_url, run_id) == ("succeeded", "b" * 32, None)


def test_runs_reset_frees_a_stuck_run_and_the_old_holder_cannot_write(db_url: str, run_id: str) -> None:
    with session_scope(db_url) as session:
        claims.claim_run(session, run_id, "a" * 32)
    with session_scope(db_url) as session:
        assert claims.reset_run(session, run_id, "reset by operator") == "running"
    assert _status(db_url, run_id) == ("failed", None, "reset by operator")
    with session_scope(db_url) as session:
        assert not claims.heartbeat(session, run_id, "a" * 32)
        assert claims.claim_run(session, run_id, "b" * 32)
        repo.mark_succeeded(session, run_id)
    with session_scope(db_url) as session:
        assert claims.reset_run(session, run_id, "again") == "succeeded"
    assert _status(db_url, run_id)[0] == "succeeded"


# --- transient database errors ----------------------------------------------------------------------


def _operational(message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception(message))


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ('connection failed: connection to server at "127.0.0.1", port 5 failed: Connection refused', True),
        ("FATAL:  the database system is starting up", True),
        ("FATAL:  terminating connection due to administrator command", True),
        ("server closed the connection unexpectedly", True),
        ("database is locked", True),
        ('relation "eval_runs" does not exist', False),
        ("no such table: eval_runs", False),
    ],
)
def test_which_database_errors_are_transient(message: str, transient: bool) -> None:
    assert is_transient(_operational(message)) is transient
    wrapped = DatabaseError("database error")
    wrapped.__cause__ = _operational(message)
    assert is_transient(wrapped) is transient


def test_a_transient_error_is_retried_until_the_database_answers() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _operational("Connection refused")
        return "stored"

    assert retry_transient(flaky, "testing", budget_s=10) == "stored"
    assert len(calls) == 3


def test_a_transient_error_beyond_the_budget_is_one_database_error() -> None:
    def down() -> None:
        raise _operational("Connection refused\nDETAIL: a very long second line")

    with pytest.raises(
        DatabaseError, match=r"^database unavailable for 0\.3s while testing: Connection refused$"
    ):
        retry_transient(down, "testing", budget_s=0.3)


def test_a_permanent_error_is_raised_at_once() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise _operational("no such table: eval_runs")

    with pytest.raises(OperationalError):
        retry_transient(broken, "testing", budget_s=10)
    assert calls == [1]


# --- arbitrary model output and short errors --------------------------------------------------------


@given(st.text())
def test_encoding_is_lossless_and_plain_text_is_stored_unchanged(value: str) -> None:
    assert decode_text(encode_text(value)) == value
    assert "\x00" not in encode_text(value)
    if "\x00" not in value and not value.startswith(MARKER):
        assert encode_text(value) == value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(output=st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.just("a\x00b\\0\x00"))
def test_any_model_output_round_trips_through_the_database(db_url: str, output: str) -> None:
    key = uuid.uuid4().hex
    with session_scope(db_url) as session:
        repo.add_predictions(session, "n" * 64, "n" * 64, "n" * 64, [(key, output, {})])
    with session_scope(db_url) as session:
        stored = repo.cached_outputs(session, "n" * 64, "n" * 64, "n" * 64)
    assert stored[key].output == output


def test_a_database_error_is_stored_as_one_short_line(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Prediction.__table__), [{"checkpoint_fingerprint": None} for _ in range(300)])
    except Exception as exc:
        message = short_error(exc)
    finally:
        engine.dispose()
    assert len(message) < 300 and "\n" not in message and "INSERT" not in message
    assert message.startswith("IntegrityError: ") or message.startswith("NotNullViolation: ")


def test_a_long_error_is_cut() -> None:
    message = short_error(RuntimeError("x" * 10_000))
    assert len(message) == 500 and message.endswith(" ...(truncated)")


# --- concurrent first use of a fresh database -------------------------------------------------------

# Each process imports everything first, then waits for one go signal, so the migrations really race.
UPGRADE = (
    "import os, sys, time; from posteval.db.migrate import upgrade\n"
    "while not os.path.exists(sys.argv[2]): time.sleep(0.01)\n"
    "upgrade(sys.argv[1])"
)


def _upgrade_concurrently(url: str, n: int, go: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", UPGRADE, url, str(go)], stderr=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    time.sleep(0.5)  # not a timing assertion: gives the processes their imports before the go signal
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, errors
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
    engine.dispose()


def test_four_processes_migrate_a_fresh_sqlite_file_at_once(tmp_path: Path) -> None:
    _upgrade_concurrently(f"sqlite:///{tmp_path / 'fresh.db'}", 4, tmp_path / "go")


@pytest.mark.postgres
def test_eight_processes_migrate_a_fresh_postgres_database_at_once(tmp_path: Path) -> None:
    from tests.conftest import _postgres_database

    for url in _postgres_database():
        _upgrade_concurrently(url, 8, tmp_path / "go")


def test_the_heartbeat_is_renewed_while_the_run_works(
    db_url: str, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posteval.pipeline import RunRef, heartbeat
    from posteval.settings import get_settings

    monkeypatch.setenv("POSTEVAL_RUN_LEASE_S", "0.2")  # a beat every 0.05 s
    get_settings.cache_clear()
    try:
        with session_scope(db_url) as session:
            claims.claim_run(session, run_id, "a" * 32)
            session.execute(update(EvalRun).where(EvalRun.id == run_id).values(heartbeat_at=None))
        with heartbeat(RunRef(run_id, False, "running", "a" * 32), database_url=db_url):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with session_scope(db_url) as session:
                    if session.get_one(EvalRun, run_id, populate_existing=True).heartbeat_at is not None:
                        break
                time.sleep(0.05)
        with session_scope(db_url) as session:
            assert session.get_one(EvalRun, run_id).heartbeat_at is not None
    finally:
        monkeypatch.delenv("POSTEVAL_RUN_LEASE_S")
        get_settings.cache_clear()


def test_runs_reset_on_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    from posteval.db.migrate import upgrade

    upgrade(url)
    with session_scope(url) as session:
        run_id = _run(session)
        claims.claim_run(session, run_id, "a" * 32)
    env = {"POSTEVAL_HOME": str(tmp_path), "POSTEVAL_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "posteval.cli", "runs", "reset", run_id[:8]]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert (first.returncode, first.stdout.strip()) == (
        0,
        f"run {run_id[:12]}: running -> failed; the next evaluation resumes it",
    ), first.stderr
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.stdout.strip() == f"run {run_id[:12]} is failed: nothing to reset"
    assert _status(url, run_id) == ("failed", None, "reset by operator (posteval runs reset)")


def test_a_second_flow_cannot_claim_a_running_run(
    tmp_path: Path, finetuned_checkpoint: Path, sqlite_url: str
) -> None:
    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n')
    loaded = load_suite(small_suite(tmp_path))
    checkpoint = resolve_checkpoint(finetuned_checkpoint, model_name="claims")
    from posteval.pipeline import prepare_dataset

    datasets = [prepare_dataset(spec) for spec in loaded.suite.datasets]
    first = register_run(
        checkpoint, loaded, datasets, trigger="event", flow_run_id="A", database_url=sqlite_url
    )
    assert first.status == "running"
    with pytest.raises(
        RunnerError, match=rf"run {first.run_id} .* is already being evaluated \(flow run A\)"
    ):
        register_run(checkpoint, loaded, datasets, trigger="event", flow_run_id="B", database_url=sqlite_url)
