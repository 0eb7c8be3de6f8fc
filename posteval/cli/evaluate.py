"""`posteval evaluate` (resolve the inputs before Prefect starts, then run the post-training flow) and
`posteval demo`, which evaluates the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posteval import progress, timing
from posteval.cli.common import DaskAddressOpt, FormatOpt, TaskRunnerOpt, VerboseOpt, guard, quiet
from posteval.db import queries
from posteval.errors import GateFailed
from posteval.views.output import Format
from posteval.views.render import RichProgress, console, err_console, print_run, progress_bar


def run_evaluation(
    checkpoint: str,
    suite: str,
    *,
    trigger: str = "manual",
    model_name: str | None = None,
    force: bool = False,
    database_url: str | None = None,
    adapter_base: str | None = None,
    task_runner: str = "default",
    dask_address: str | None = None,
) -> str:
    """Resolve the inputs, bring the database to head, run the post-training flow; returns the run id.

    Bad input is found here, before Prefect starts, so it costs a second and prints one line; the flow
    gets the resolved inputs and does not validate them again.
    """
    from posteval.cli.prefect_server import prepare_api, using_api

    api = prepare_api()  # a temporary Prefect server boots while the inputs are resolved
    try:
        with timing.phase("imports (the pipeline)"):
            from posteval.db.migrate import upgrade
            from posteval.pipeline import check_task_runner
            from posteval.pipeline.resolve import resolve

        check_task_runner(task_runner, dask_address)
        with timing.phase("resolve and validate"):
            resolved = resolve(checkpoint, suite, model_name=model_name, adapter_base=adapter_base)
        with timing.phase("database upgrade"):
            upgrade(database_url)
        with timing.phase("Prefect server start (waiting)"):
            url = api()
        with timing.phase("imports (Prefect, the flow)"):
            from posteval.flows.post_training import evaluate_checkpoint

        with using_api(url), progress_bar() as bar:
            progress.set_sink(RichProgress(bar))
            try:
                with timing.phase(PREFECT):
                    return evaluate_checkpoint(
                        checkpoint=checkpoint,
                        suite=suite,
                        trigger=trigger,
                        model_name=model_name,
                        force=force,
                        database_url=database_url,
                        adapter_base=adapter_base,
                        task_runner=task_runner,
                        dask_address=dask_address,
                        resolved=resolved,
                    )
            finally:
                progress.set_sink(None)
    except BaseException:
        # A refused input or a failed run: the temporary server goes now, not at exit, so an in-process
        # caller (a test, a notebook) never collects one idle server per refused call. After a flow run
        # it stays until exit, when Prefect has sent the run's last logs and events to it.
        api.close()
        raise


PREFECT = "Prefect (flow and task runs, API calls)"
OUTSIDE_THE_FLOW = (
    "start-up",
    "imports",
    "resolve and validate",
    "database upgrade",
    "Prefect server start",
    "output",
    PREFECT,
)


def print_profile() -> None:
    """Where the evaluation's wall time went, one phase a line, on stderr."""
    from rich.table import Table

    rows = timing.breakdown(PREFECT, OUTSIDE_THE_FLOW)
    table = Table(title="where the time went", title_justify="left")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    total = sum(seconds for _, seconds in rows)
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.2f}", f"{seconds / total:.0%}" if total else "-")
    table.add_row("total", f"{total:.2f}", "100%")
    err_console.print(table)


def evaluate(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="A transformers checkpoint folder, a PEFT adapter folder, or a served model "
            "openai:MODEL@http://host:port/v1."
        ),
    ],
    suite: Annotated[Path, typer.Option("--suite", "-s", help="The suite YAML file.")],
    model_name: Annotated[
        str | None, typer.Option("--model", help="Model name (default: the folder's).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Make a new run even if this content was evaluated.")] = False,
    base: Annotated[
        str | None,
        typer.Option("--base", help="An adapter's base model (default: from adapter_config.json)."),
    ] = None,
    task_runner: TaskRunnerOpt = "default",
    dask_address: DaskAddressOpt = None,
    fmt: FormatOpt = Format.table,
    verbose: VerboseOpt = False,
    profile: Annotated[
        bool, typer.Option("--profile", help="Say where the time went (start-up, model load, ...) on stderr.")
    ] = False,
) -> None:
    """Evaluate CHECKPOINT on a suite; exit 0 ok, 1 regression gate failed, 2 bad input, 3 runtime error
    (130 after Ctrl-C, 143 after SIGTERM: the run is marked failed, "interrupted")."""
    timing.reset()
    timing.add("start-up", timing.process_age() or 0.0)  # the interpreter and the CLI's imports
    quiet(verbose)
    from posteval.cli.interrupts import exit_code, graceful_signals

    try:
        with graceful_signals():
            run_id = guard(
                lambda: run_evaluation(
                    checkpoint,
                    str(suite),
                    model_name=model_name,
                    force=force,
                    adapter_base=base,
                    task_runner=task_runner,
                    dask_address=dask_address,
                )
            )
    except KeyboardInterrupt as interrupt:
        _interrupted(interrupt)
        raise typer.Exit(exit_code(interrupt)) from None
    except GateFailed as failed:  # the run is stored: show it, then exit 1
        failed_run = failed.run_id
        _show(failed_run, fmt, profile)
        raise typer.Exit(failed.exit_code) from None
    _show(run_id, fmt, profile)


def _show(run_id: str, fmt: Format, profile: bool) -> None:
    """The stored run, then (with --profile) where the time went."""
    with timing.phase("output"):
        guard(lambda: print_run(run_id, fmt))
    if profile:
        print_profile()


def _interrupted(interrupt: KeyboardInterrupt) -> None:
    """One line: what stopped the evaluation and which run this process marked failed."""
    from posteval.cli.interrupts import Terminated

    what = "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"
    try:
        run_id = queries.interrupted_run()
    except Exception:  # the database itself may be what is gone
        run_id = None
    done = (
        f"run {run_id[:12]} marked failed (interrupted); evaluate again to resume from its stored outputs"
        if run_id
        else "no run was marked (it had not started)"
    )
    err_console.print(f"[bold red]interrupted[/] by {what}: {done}", highlight=False, soft_wrap=True)


def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where models are built (default POSTEVAL_HOME/demo).")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build a tiny model, fine-tune it, evaluate it into the default database, show the results."""
    quiet(verbose)
    from posteval.cli.demo import run_demo

    guard(lambda: run_demo(workdir, console=console, evaluate=run_evaluation, show=print_run))
