"""What every command shares: the option types, quiet logging, and the guard that turns a PostevalError into
one line and its exit code (2 bad input, 3 runtime failure), never a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from posteval.errors import GateFailed, PostevalError, short_error
from posteval.views.output import Format
from posteval.views.render import err_console

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv")]
SinceOpt = Annotated[
    str | None, typer.Option(help="Only runs since a date (2026-11-01) or a duration ago (7d, 12h, 30m).")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and posteval's logs.")]
TaskRunnerOpt = Annotated[
    str,
    typer.Option(help="default (one process) or dask (shard each dataset's model work over a Dask cluster)."),
]
DaskAddressOpt = Annotated[
    str | None,
    typer.Option(help="The Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a temporary local cluster)."),
]


_NOISY = ("prefect", "docket", "uvicorn", "httpx")
# Prefect's flow and task run loggers: what they say goes to the Prefect API (the UI's flow run log) whatever
# the terminal shows. Task runs at WARNING, as under `posteval serve`: their INFO is "Finished in state ...".
_RUN_LOGGERS = {"prefect.flow_runs": "INFO", "prefect.task_runs": "WARNING"}


class _TerminalFilter(logging.Filter):
    """The terminal shows posteval's own lines; Prefect's and the libraries' only when they are critical."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or not record.name.startswith(_NOISY)


def quiet(verbose: bool) -> None:
    """Keep Prefect's and the libraries' log lines out of the terminal unless asked for.

    Only the terminal is quieted: a flow run's own log (Prefect's flow and task run loggers) still reaches
    the Prefect API (flow runs at INFO, task runs at WARNING), so the run started here has its log in
    the Prefect UI like a served one.
    """
    level = "INFO" if verbose else "CRITICAL"  # failures are reported once, by posteval
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL", level)
    for name, run_level in _RUN_LOGGERS.items():
        os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_{name.upper().replace('.', '_')}_LEVEL", run_level)
        logging.getLogger(name).setLevel(run_level)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    root = logging.getLogger()
    if not root.handlers:
        terminal = logging.StreamHandler()
        terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(terminal)
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        if not verbose:  # a failed task is reported once, by us, not with Prefect's traceback
            terminal.addFilter(_TerminalFilter())
    if not verbose:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.CRITICAL)


class RuntimeFailure(PostevalError):
    """An unexpected error, reported as a runtime failure (exit 3)."""


def fail(exc: PostevalError) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a PostevalError becomes one message and its exit code, never a traceback.

    GateFailed passes through: the caller shows the stored run before exiting 1.
    """
    try:
        return fn()
    except GateFailed:
        raise
    except PostevalError as exc:
        fail(exc)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug or an environment problem: one line and exit 3, never exit 1
        logging.getLogger("posteval").info("unexpected error", exc_info=True)  # shown with --verbose
        fail(RuntimeFailure(f"{short_error(exc)} (run with --verbose for details)"))


def with_schema(fn: Callable[[], Any]) -> Any:
    """``fn()`` after bringing the database to head (a new database lists nothing; it is no error)."""
    from posteval.db.migrate import upgrade

    upgrade()
    return fn()
