"""The schema only changes through Alembic, and the models match the migrations on both backends."""

from __future__ import annotations

import json
import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from posteval.db.migrate import at_head, downgrade, upgrade
from posteval.db.models import Base

TABLES = {
    "checkpoints",
    "suites",
    "datasets",
    "eval_runs",
    "metrics",
    "predictions",
    "example_scores",
    "example_stats",
    "loss_points",
    "health_reports",
    "baselines",
    "run_details",
    "trigger_failures",
    "human_labels",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    assert _tables(empty_db_url) == TABLES
    downgrade(empty_db_url, "base")
    assert _tables(empty_db_url) == set()
    upgrade(empty_db_url)
    assert _tables(empty_db_url) == TABLES


def test_a_database_at_head_is_recognised_without_importing_alembic(empty_db_url: str) -> None:
    assert not at_head(empty_db_url)  # no alembic_version table yet
    upgrade(empty_db_url, "0003")
    assert not at_head(empty_db_url)
    upgrade(empty_db_url)
    assert at_head(empty_db_url)
    assert _tables(empty_db_url) == TABLES
    # What every evaluation does first, in a new process: nothing to migrate, and no Alembic import.
    probe = (
        f"import sys; from posteval.db.migrate import upgrade; upgrade({empty_db_url!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_models_match_migrations(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    engine = create_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path) -> None:
    from sqlalchemy import text

    from posteval.db.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}", busy_timeout_ms=1234)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 1234
    engine.dispose()


def test_0005_keeps_every_row_up_and_down(empty_db_url: str) -> None:
    """The comparison-core revision only adds: runs, metrics and scores survive its upgrade and downgrade."""
    from sqlalchemy import text

    upgrade(empty_db_url, "0003")
    engine = create_engine(empty_db_url)
    rows = [
        "INSERT INTO checkpoints (id, fingerprint, path, model_name, is_adapter, created_at) "
        "VALUES (1, 'f', '/c', 'm', false, '2026-01-01')",
        "INSERT INTO suites (id, name, fingerprint, source_text, created_at) "
        "VALUES (1, 's', 'sf', 'x', '2026-01-01')",
        "INSERT INTO datasets (id, name, fingerprint, row_count, path, created_at) "
        "VALUES (1, 'd', 'df', 1, '/d', '2026-01-01')",
        "INSERT INTO eval_runs (id, checkpoint_id, suite_id, model_name, trigger, status, idempotency_key, "
        "warnings, created_at) VALUES ('r1', 1, 1, 'm', 'cli', 'succeeded', 'k', '[]', '2026-01-01')",
        "INSERT INTO metrics (id, run_id, dataset_id, name, value, n, higher_is_better, signature, details) "
        "VALUES (1, 'r1', 1, 'accuracy', 0.5, 1, true, 'sig', '{}')",
        "INSERT INTO example_scores (id, run_id, dataset_id, metric, example_key, value) "
        "VALUES (1, 'r1', 1, 'accuracy', 'e1', 1.0)",
    ]
    count = (
        "SELECT (SELECT count(*) FROM eval_runs) + (SELECT count(*) FROM metrics) "
        "+ (SELECT count(*) FROM example_scores) + (SELECT count(*) FROM checkpoints)"
    )
    try:
        with engine.begin() as conn:
            for statement in rows:
                conn.execute(text(statement))
        upgrade(empty_db_url)
        with engine.begin() as conn:
            assert conn.execute(text(count)).scalar() == 4
            assert conn.execute(text("SELECT output_settings, config_hash FROM eval_runs")).one() == (
                None,
                None,
            )
            conn.execute(text("UPDATE eval_runs SET config_hash = 'h'"))
        downgrade(empty_db_url, "0003")
        with engine.begin() as conn:
            assert conn.execute(text(count)).scalar() == 4
            assert conn.execute(text("SELECT value FROM metrics")).scalar() == 0.5
        assert "example_stats" not in _tables(empty_db_url)
    finally:
        engine.dispose()


def _seed_0003(url: str) -> None:
    """A run stored before 0006: accuracy, and two reports stored as metrics with per-example scores."""
    from datetime import UTC, datetime

    from sqlalchemy import MetaData

    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    t = meta.tables
    with engine.begin() as conn:
        conn.execute(
            t["checkpoints"]
            .insert()
            .values(
                id=1, fingerprint="c" * 64, path="/ckpt", model_name="m", is_adapter=False, created_at=now
            )
        )
        conn.execute(
            t["suites"].insert().values(id=1, name="s", fingerprint="s" * 64, source_text="x", created_at=now)
        )
        conn.execute(
            t["datasets"]
            .insert()
            .values(id=1, name="d", fingerprint="d" * 64, row_count=2, path="/d", created_at=now)
        )
        conn.execute(
            t["eval_runs"]
            .insert()
            .values(
                id="r" * 32,
                checkpoint_id=1,
                suite_id=1,
                model_name="m",
                trigger="cli",
                status="succeeded",
                idempotency_key="k" * 64,
                warnings=[],
                created_at=now,
            )
        )
        for name, value, details in (
            ("accuracy", 0.5, {"labels": ["a", "b"]}),
            ("confusion_matrix", 0.5, {"labels": ["a", "b"], "matrix": [[1, 0], [1, 0]]}),
            ("per_class_zero_division-1", 0.25, {"per_class": {"a": {"f1": 0.5}}}),
        ):
            conn.execute(
                t["metrics"]
                .insert()
                .values(
                    run_id="r" * 32,
                    dataset_id=1,
                    name=name,
                    value=value,
                    ci_low=0.0,
                    ci_high=1.0,
                    n=2,
                    higher_is_better=True,
                    signature=f"metric:{name}",
                    details=details,
                )
            )
            conn.execute(
                t["example_scores"].insert(),
                [
                    {"run_id": "r" * 32, "dataset_id": 1, "metric": name, "example_key": key, "value": v}
                    for key, v in (("0", 1.0), ("1", 0.0))
                ],
            )
    engine.dispose()


def _rows(url: str, sql: str) -> list[tuple]:
    from sqlalchemy import text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


METRICS_SQL = "SELECT name, value, ci_low, ci_high, n, higher_is_better, signature FROM metrics ORDER BY name"
SCORES_SQL = "SELECT metric, example_key, value FROM example_scores ORDER BY metric, example_key"


def test_0006_moves_stored_reports_into_details_and_back(empty_db_url: str) -> None:
    upgrade(empty_db_url, "0003")
    _seed_0003(empty_db_url)
    before = (_rows(empty_db_url, METRICS_SQL), _rows(empty_db_url, SCORES_SQL))
    upgrade(empty_db_url)
    assert [r[0] for r in _rows(empty_db_url, METRICS_SQL)] == ["accuracy"]
    assert {r[0] for r in _rows(empty_db_url, SCORES_SQL)} == {"accuracy"}
    details = {r[0]: r[1] for r in _rows(empty_db_url, "SELECT name, details FROM run_details ORDER BY name")}
    parsed = {
        name: value if isinstance(value, dict) else json.loads(value) for name, value in details.items()
    }
    assert parsed == {
        "confusion_matrix": {"labels": ["a", "b"], "matrix": [[1, 0], [1, 0]]},
        "per_class_zero_division-1": {"per_class": {"a": {"f1": 0.5}}},
    }
    downgrade(empty_db_url, "0003")
    assert (_rows(empty_db_url, METRICS_SQL), _rows(empty_db_url, SCORES_SQL)) == before
