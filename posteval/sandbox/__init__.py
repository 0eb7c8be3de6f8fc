"""Running model-written code: a sandbox interface with backends registered by name, and a bounded pool.

``local`` (unshare namespaces, a separate user per worker slot, rlimits) and ``bubblewrap`` (the same
inside bwrap's read-only root and private /tmp) run here; docker/sandbox.md describes running the whole
evaluation in a container for teams. Imports only posteval's foundations (settings, errors).
"""

from __future__ import annotations

from posteval.sandbox import bubblewrap, local  # noqa: F401 - registers the backends
from posteval.sandbox.base import (
    STATUSES,
    Execution,
    Limits,
    Program,
    Sandbox,
    Status,
    backend_names,
    get_backend,
)
from posteval.sandbox.pool import run_all

__all__ = [
    "STATUSES",
    "Execution",
    "Limits",
    "Program",
    "Sandbox",
    "Status",
    "backend_names",
    "get_backend",
    "run_all",
]
