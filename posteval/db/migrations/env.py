"""Alembic environment: the URL comes from the config posteval builds, else from posteval's Settings.

Two guarantees every migration relies on (see docs/reliability.md):
- SQLite rebuilds tables (batch mode) with foreign keys OFF, so dropping the old copy of a parent table
  never cascades into its children; PRAGMA foreign_keys cannot change inside a transaction, so it is set
  when the connection opens.
- The schema is migrated once, under a lock: an exclusive transaction on SQLite, a transaction-scoped
  advisory lock on PostgreSQL. A second process waits, then finds the database at head and does nothing.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

from posteval.db.engine import make_engine
from posteval.db.models import Base
from posteval.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url

# Any fixed 64-bit key: the lock that serialises posteval's migrations on one PostgreSQL database.
ADVISORY_LOCK_KEY = 0x706F737465766131


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _migration_engine() -> Engine:
    engine = make_engine(url)
    if make_url(url).get_backend_name() != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
        # Runs after make_engine's own listener (which turns them on for normal sessions).
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(engine, "begin")
    def _exclusive(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN EXCLUSIVE")

    return engine


def run_migrations_online() -> None:
    engine = _migration_engine()
    try:
        # One transaction around every pending migration, begun before Alembic looks at the version table,
        # so the lock is held from reading the current revision to writing the new one.
        with engine.connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
