"""Alembic, driven from Python so `posteval db upgrade` works from an installed package.

Every evaluation brings its database to head first. A database already there is recognised without
importing Alembic (a quarter of a second): its ``alembic_version`` row is compared with the head revision
Alembic named the last time (remembered with posteval's code, which holds the migrations).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError

from posteval.db.engine import _safe_url, make_engine
from posteval.errors import DatabaseError, InputError
from posteval.remembered import remembered
from posteval.settings import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for ``url`` (default: the settings' database) and posteval's migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolates '%': escape it so URL-encoded passwords survive.
    config.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return config


def _head() -> list[str]:
    from alembic.script import ScriptDirectory

    return sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def at_head(url: str | None = None) -> bool:
    """Whether the database at ``url`` is at this posteval's head revision (False when it has no version)."""
    head = remembered("alembic head", [], _head, libraries=("alembic",))
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = sorted(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except (OperationalError, ProgrammingError):  # no alembic_version table yet
        return False
    finally:
        engine.dispose()
    return current == head


def upgrade(url: str | None = None, revision: str = "head") -> str:
    """Bring the database at ``url`` to ``revision``; returns the URL with its password hidden."""
    if revision == "head" and at_head(url):
        return _safe_url(url)
    from alembic import command
    from alembic.util import CommandError

    config = alembic_config(url)
    try:
        _check_revisions(config, url, revision)
        command.upgrade(config, revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate the database at {_safe_url(url)}: {exc.orig}") from exc
    except CommandError as exc:
        raise DatabaseError(f"cannot migrate the database at {_safe_url(url)}: {exc}") from exc
    return _safe_url(url)


def _check_revisions(config: Config, url: str | None, revision: str) -> None:
    """Refuse, in one line, a database this posteval does not know, or a target older than the database.

    Alembic answers the first with a raw CommandError and treats the second as a silent no-op, which
    `posteval db upgrade 0001` would have reported as success.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config)
    known = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    if revision != "head" and revision not in known:
        raise InputError(f"unknown revision {revision!r} (expected head or one of {', '.join(known)})")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    for rev in current:
        if rev not in known:
            raise DatabaseError(
                f"the database at {_safe_url(url)} is at revision {rev!r}, which this posteval does not know "
                f"(it knows {', '.join(known)}): it was migrated by a newer posteval; upgrade posteval"
            )
    if revision == "head":
        return
    for rev in current:
        if rev != revision and known.index(rev) > known.index(revision):
            raise InputError(
                f"the database at {_safe_url(url)} is at revision {rev}, newer than {revision}: "
                "`db upgrade` never goes back (nothing was changed)"
            )


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Take the database at ``url`` down to ``revision``."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)
