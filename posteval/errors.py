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


class DatabaseError(PostevalError):
    """The database cannot be reached or is not at the expected schema."""


class GateFailed(PostevalError):
    """The regression gate failed: a gated metric dropped significantly beyond its tolerance."""

    exit_code = 1

    def __init__(self, run_id: str, summary: str) -> None:
        super().__init__(f"run {run_id}: regression gate failed: {summary}")
        self.run_id = run_id
