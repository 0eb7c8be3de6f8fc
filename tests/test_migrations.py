"""The schema only changes through Alembic, and the models match the migrations on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from posteval.db.migrate import downgrade, upgrade
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
