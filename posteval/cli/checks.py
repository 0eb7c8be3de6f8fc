"""Checks of CLI option values, answered as one InputError line (exit 2) before any query or file write.

Typer's own validation prints a framed usage block; these keep every bad option to the one-line form the
rest of posteval uses, naming the option and what was expected.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from posteval.db.models import GATE_STATUSES, RUN_STATUSES
from posteval.errors import InputError

DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}


def check_status(value: str | None) -> str | None:
    """``--status``: one of the run statuses."""
    if value is not None and value not in RUN_STATUSES:
        raise InputError(f"--status {value!r}: expected one of {', '.join(RUN_STATUSES)}")
    return value


def check_gate(value: str | None) -> str | None:
    """``--gate``: one of the regression gate's outcomes."""
    if value is not None and value not in GATE_STATUSES:
        raise InputError(f"--gate {value!r}: expected one of {', '.join(GATE_STATUSES)}")
    return value


def check_limit(value: int) -> int:
    """``--limit``: a positive number of rows."""
    if value < 1:
        raise InputError(f"--limit {value}: expected a positive number of runs")
    return value


def parse_since(value: str | None) -> datetime | None:
    """A --since value as an aware datetime: an ISO date or time, or a duration ago like 7d, 12h or 30m."""
    if value is None:
        return None
    if value[:-1].isdigit() and value[-1] in DURATION_UNITS:
        try:
            return datetime.now(UTC) - timedelta(**{DURATION_UNITS[value[-1]]: int(value[:-1])})
        except OverflowError:
            raise InputError(
                f"--since {value!r}: reaches back before the year 1 (give a shorter duration or a date)"
            ) from None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"--since {value!r}: expected a date like 2026-11-01 or a duration like 7d") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def writable_file(path: Path, option: str) -> Path:
    """``path`` if a file can be written there: its folder exists and is writable, and it is no folder."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{option} {path}: not writable (permission denied)")
    return path
