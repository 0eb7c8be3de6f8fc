"""One exception family for everything a user can cause.

The CLI prints a PostevalError's message without a traceback and maps its class to an exit code:
bad input is 2, a runtime failure 3 (a failed regression gate, 1, is not an exception).
"""

from __future__ import annotations


class PostevalError(Exception):
    """Base of every error a user can cause or fix."""

    exit_code = 3


class InputError(PostevalError):
    """Bad input: a suite, a dataset, a checkpoint, a metric name, a CLI argument."""

    exit_code = 2


class SuiteError(InputError):
    """A suite file that does not validate; the message names the file, the field and what was expected."""


class DatasetError(InputError):
    """A dataset that is missing, malformed, or lacks a field the suite needs."""


class CheckpointError(InputError):
    """A checkpoint folder that is missing, incomplete or cannot be loaded."""


class MetricError(InputError):
    """An unknown metric, an unknown or invalid option, or inputs a metric cannot score."""


class RunnerError(PostevalError):
    """A model backend failed at run time (out of memory after retries, an endpoint that keeps failing)."""


class SandboxError(PostevalError):
    """The sandbox cannot run programs on this machine (a backend's tool is missing or not permitted)."""


class DatabaseError(PostevalError):
    """The database cannot be reached or is not at the expected schema."""


class GateFailed(PostevalError):
    """The regression gate failed: a gated metric dropped significantly beyond its tolerance."""

    exit_code = 1

    def __init__(self, run_id: str, summary: str) -> None:
        super().__init__(f"run {run_id}: regression gate failed: {summary}")
        self.run_id = run_id


class RunTakenOver(RunnerError):
    """The run's claim was lost (its lease expired and another delivery took it over, or an operator
    reset it): this delivery stops without touching the run's stored outcome."""


ERROR_LIMIT = 500


def short_error(exc: BaseException, limit: int = ERROR_LIMIT) -> str:
    """``exc`` in one short line for the run row and the terminal: never a multi-kilobyte SQL dump.

    A database error is named by its driver error's first line (SQLAlchemy's text adds the statement
    and every parameter); anything longer than ``limit`` characters is cut with a marker.
    """
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):  # a SQLAlchemy error: the driver's first line only
        lines = str(orig).strip().splitlines()
        text = f"{type(orig).__name__}: {lines[0] if lines else ''}"
    else:
        text = f"{type(exc).__name__}: {exc}".strip()
    text = text.replace("\x00", "\\0")
    return text if len(text) <= limit else text[: limit - 15] + " ...(truncated)"
