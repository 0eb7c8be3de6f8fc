"""Scratch PostgreSQL databases for tests and benchmarks: created on entry, dropped on exit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from posteval.db.engine import get_engine


@contextmanager
def scratch_database(admin_url: str, prefix: str = "posteval_scratch") -> Iterator[str]:
    """The URL of a new, empty database on the server of ``admin_url``; it is dropped afterwards.

    Raises the driver's error when the server cannot be reached (callers decide to fail or skip).
    """
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except BaseException:
        admin.dispose()
        raise
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
