"""Transient database errors (a restart, a refused or reset connection, SQLite busy) retried with backoff.

Only errors that say the connection or the server is momentarily unavailable are retried, for a bounded
time (``POSTEVAL_DB_RETRY_S``); anything else (a constraint, bad SQL) is raised at once. The retried
function must be one transaction that is safe to run again: every caller in the pipeline is (batch
writes skip what is stored, status changes are guarded by the run's claim).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from posteval.errors import DatabaseError
from posteval.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_MARKERS = (
    "connection refused",
    "could not connect",
    "connection reset",
    "connection timed out",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "ssl connection has been closed",
    "consuming input failed",
    "connection is closed",
    "connection failed",
    "no connection to the server",
    "database is locked",
    "database is busy",
    "database table is locked",
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the database is only momentarily away."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain: DatabaseError -> SQLAlchemy error -> driver error
        if seen is None:
            return False
        if getattr(seen, "connection_invalidated", False):
            return True
        text = str(seen).lower()
        if any(marker in text for marker in TRANSIENT_MARKERS):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


def retry_transient(fn: Callable[[], T], what: str, budget_s: float | None = None) -> T:
    """``fn()``, run again after transient database errors for at most ``budget_s`` seconds.

    Raises DatabaseError (one line, the driver's first line) when the budget is spent.
    """
    budget = get_settings().db_retry_s if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    delay = 0.1
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                first = lines[0] if lines else type(exc).__name__
                raise DatabaseError(f"database unavailable for {budget:g}s while {what}: {first}") from exc
            log.warning("database unavailable while %s; retrying in %.1fs", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
