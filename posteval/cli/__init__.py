"""The face: the `posteval` command (Typer), one module per group of commands.

Owns argument parsing, one-line errors with exit codes (common.guard) and terminal output. It is the only
part of posteval/ that may import posteval.flows (lazily, inside a command, so listings never start
Prefect); it may import every other layer.
"""

from __future__ import annotations

import gc

import typer

from posteval.cli import history
from posteval.cli.automation import notify, serve, trigger
from posteval.cli.evaluate import demo, evaluate, run_evaluation
from posteval.cli.human import human_app
from posteval.cli.server import server_start, server_status, server_stop
from posteval.views.render import print_run

__all__ = ["app", "main", "print_run", "run_evaluation"]

app = typer.Typer(
    help="Evaluate fine-tuned checkpoints, keep every result, catch regressions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Past runs.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
baseline_app = typer.Typer(help="Pinned baselines for the regression gate.", no_args_is_help=True)
server_app = typer.Typer(help="A local Prefect server that every evaluation reuses.", no_args_is_help=True)

app.command()(evaluate)
app.add_typer(runs_app, name="runs")
runs_app.command("reset")(history.runs_reset)
runs_app.command("list")(history.runs_list)
runs_app.command("show")(history.runs_show)
runs_app.command("loss-curve")(history.runs_loss_curve)
app.command()(history.compare)
app.command()(history.report)
app.command("history")(history.history_command)
app.add_typer(baseline_app, name="baseline")
baseline_app.command("set")(history.baseline_set)
baseline_app.command("list")(history.baseline_list)
app.add_typer(db_app, name="db")
db_app.command("upgrade")(history.db_upgrade)
app.command()(demo)
app.command()(trigger)
app.command()(serve)
app.command()(notify)
app.add_typer(server_app, name="server")
server_app.command("start")(server_start)
server_app.command("stop")(server_stop)
server_app.command("status")(server_status)
app.add_typer(human_app, name="human")


def main() -> None:  # pragma: no cover - console entry point
    """The ``posteval`` command (console script and ``python -m posteval.cli``).

    Once the command is done, every object left is frozen out of the garbage collector: the interpreter's
    final collection passes over Prefect's and pydantic's hundreds of thousands of objects took 0.7 s
    of a 4 s command, to free memory the process is about to return anyway. Exit handlers (Prefect
    sending its last logs and events, temporary folders) still run; only that final sweep is skipped.
    """
    try:
        app(prog_name="posteval")
    finally:
        gc.freeze()
