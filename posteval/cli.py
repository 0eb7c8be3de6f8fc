"""The `posteval` command: evaluate checkpoints, list runs, manage the database, run the demo.

Flows are imported lazily (inside commands), so the rest of the core never imports Prefect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pandas as pd
import typer
from rich.markup import escape

from posteval import progress, queries
from posteval.cli_automation import DaskAddressOpt, TaskRunnerOpt, serve, trigger
from posteval.cli_checks import check_limit, check_status, parse_since, writable_file
from posteval.errors import GateFailed, InputError, PostevalError, short_error
from posteval.output import Format, emit
from posteval.render import RichProgress, comparison_table, console, err_console, print_run, progress_bar

app = typer.Typer(
    help="Evaluate fine-tuned checkpoints, keep every result, catch regressions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Past runs.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
baseline_app = typer.Typer(help="Pinned baselines for the regression gate.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(baseline_app, name="baseline")

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv")]
SinceOpt = Annotated[
    str | None, typer.Option(help="Only runs since a date (2026-11-01) or a duration ago (7d, 12h, 30m).")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and posteval's logs.")]


def _quiet(verbose: bool) -> None:
    """Keep Prefect's and the libraries' log lines out of the way unless asked for."""
    level = "INFO" if verbose else "CRITICAL"  # failures are reported once, by posteval
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL", level)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info" if verbose else "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:  # a failed task is reported once, by us, not with Prefect's traceback
        for name in ("prefect", "docket", "uvicorn", "httpx"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


class RuntimeFailure(PostevalError):
    """An unexpected error, reported as a runtime failure (exit 3)."""


def _fail(exc: PostevalError) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a PostevalError becomes one message and its exit code, never a traceback.

    GateFailed passes through: the caller shows the stored run before exiting 1.
    """
    try:
        return fn()
    except GateFailed:
        raise
    except PostevalError as exc:
        _fail(exc)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # a bug or an environment problem: one line and exit 3, never exit 1
        logging.getLogger("posteval").info("unexpected error", exc_info=True)  # shown with --verbose
        _fail(RuntimeFailure(f"{short_error(exc)} (run with --verbose for details)"))


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
    """Check the inputs, bring the database to head, run the post-training flow; returns the run id.

    Bad input is found here, before Prefect starts, so it costs a second and prints one line.
    """
    from posteval.checkpoint import resolve_checkpoint
    from posteval.db.migrate import upgrade
    from posteval.pipeline import check_task_runner, prepare_dataset
    from posteval.preflight import preflight
    from posteval.suite import load_suite

    check_task_runner(task_runner, dask_address)
    preflight(resolve_checkpoint(checkpoint, model_name=model_name, base_path=adapter_base))
    loaded = load_suite(suite).suite
    if loaded.base_model:
        preflight(resolve_checkpoint(loaded.base_model))
    for spec in loaded.all_datasets():
        prepare_dataset(spec)
    upgrade(database_url)
    from posteval.interrupts import detach_prefect_server

    detach_prefect_server()
    from flows.post_training import evaluate_checkpoint

    with progress_bar() as bar:
        progress.set_sink(RichProgress(bar))
        try:
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
            )
        finally:
            progress.set_sink(None)


@app.command()
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
) -> None:
    """Evaluate CHECKPOINT on a suite; exit 0 ok, 1 regression gate failed, 2 bad input, 3 runtime error
    (130 after Ctrl-C, 143 after SIGTERM: the run is marked failed, "interrupted")."""
    _quiet(verbose)
    from posteval.interrupts import exit_code, graceful_signals

    try:
        with graceful_signals():
            run_id = _guard(
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
        _guard(lambda: print_run(failed_run, fmt))
        raise typer.Exit(failed.exit_code) from None
    _guard(lambda: print_run(run_id, fmt))


def _interrupted(interrupt: KeyboardInterrupt) -> None:
    """One line: what stopped the evaluation and which run this process marked failed."""
    from posteval.interrupts import Terminated

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


@runs_app.command("reset")
def runs_reset(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
) -> None:
    """Mark a stuck pending or running run failed, so the next evaluation claims and resumes it."""
    _quiet(False)

    def reset() -> tuple[str, str]:
        from posteval.db import repo
        from posteval.db.engine import session_scope

        run_id = queries.resolve_run_id(run)
        with session_scope() as session:
            return run_id, repo.reset_run(session, run_id, "reset by operator (posteval runs reset)")

    run_id, previous = _guard(lambda: _with_schema(reset))
    if previous in ("pending", "running"):
        console.print(
            f"run {run_id[:12]}: {previous} -> failed; the next evaluation resumes it", highlight=False
        )
    else:
        console.print(f"run {run_id[:12]} is {previous}: nothing to reset", highlight=False)


@runs_app.command("list")
def runs_list(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    suite: Annotated[str | None, typer.Option(help="Only this suite name.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, succeeded or failed.")] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 50,
    fmt: FormatOpt = Format.table,
) -> None:
    """List past runs, newest first."""
    _quiet(False)
    status, after, limit = _guard(lambda: (check_status(status), parse_since(since), check_limit(limit)))
    frame = _guard(
        lambda: _with_schema(
            lambda: queries.runs(model=model, suite=suite, status=status, since=after, limit=limit)
        )
    )
    if fmt is not Format.table:
        emit(frame, fmt, console)
        return
    compact = pd.DataFrame(
        {
            "run": frame["run_id"].str[:12],
            "model": frame["model"],
            "step": frame["step"].map(lambda v: "-" if pd.isna(v) else str(int(v))),
            "suite": frame["suite"],
            "trigger": frame["trigger"],
            "status": frame["status"],
            "created": pd.to_datetime(frame["created_at"]).dt.strftime("%Y-%m-%d %H:%M"),
        }
    )
    emit(compact, fmt, console, title="runs")


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
    fmt: FormatOpt = Format.table,
) -> None:
    """One run: its summary and its metrics."""
    _quiet(False)
    _guard(lambda: _with_schema(lambda: print_run(queries.resolve_run_id(run), fmt)))


def _with_schema(fn: Callable[[], Any]) -> Any:
    from posteval.db.migrate import upgrade

    upgrade()
    return fn()


@runs_app.command("loss-curve")
def runs_loss_curve(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the PNG.")] = Path("loss.png"),
) -> None:
    """Draw the run's checkpoint's train and validation loss curve as a PNG."""
    _quiet(False)
    _guard(lambda: writable_file(out, "--out"))

    def draw() -> Path:
        run_id = queries.resolve_run_id(run)
        summary = queries.run_summary(run_id)
        curve = queries.loss_curve(int(summary["checkpoint_id"]))  # type: ignore[call-overload]
        if curve.empty:
            raise InputError(f"run {run_id[:12]}: its checkpoint has no stored loss history")
        from posteval.plots import loss_curve_png

        return loss_curve_png(curve, out, title=f"{summary['model']} (step {summary['step']})")

    console.print(f"loss curve written to {_guard(lambda: _with_schema(draw))}", highlight=False)


@app.command()
def compare(
    baseline: Annotated[str, typer.Argument(help="The baseline run (id or prefix).")],
    candidate: Annotated[str, typer.Argument(help="The candidate run (id or prefix).")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Compare two runs of one suite metric by metric: delta, its CI, a paired test, flipped examples."""
    _quiet(False)
    from posteval.compare import compare_runs

    def run() -> Any:
        base_id, cand_id = queries.resolve_run_id(baseline), queries.resolve_run_id(candidate)
        return compare_runs(base_id, cand_id)

    comparison = _guard(lambda: _with_schema(run))
    frame = comparison.to_frame()
    if fmt is not Format.table:
        emit(frame, fmt, console)
        return
    console.print(comparison_table(comparison))


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="The HTML file (default: posteval-report-<run12>.html)."),
    ] = None,
) -> None:
    """Write a run's report: one self-contained HTML file (metrics, baseline comparison, health, examples)."""
    _quiet(False)
    if out is not None:
        _guard(lambda: writable_file(out, "--out"))
    from posteval.report import write_report

    def write() -> Path:
        run_id = queries.resolve_run_id(run)
        return write_report(run_id, out or Path(f"posteval-report-{run_id[:12]}.html"))

    console.print(f"report written to {_guard(lambda: _with_schema(write))}", highlight=False)


@app.command("history")
def history_command(
    metric: Annotated[str, typer.Argument(help="A stored metric name, e.g. accuracy or f1_macro.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The model (checkpoints' model name).")],
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    suite: Annotated[str | None, typer.Option(help="Only this suite.")] = None,
    since: SinceOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the trend as a PNG here.")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """A metric of a model across its runs, in training order; optionally a PNG trend plot."""
    _quiet(False)
    if plot is not None:
        _guard(lambda: writable_file(plot, "--plot"))
    after = _guard(lambda: parse_since(since))
    frame = _guard(
        lambda: _with_schema(
            lambda: queries.metric_history(metric, model=model, dataset=dataset, suite=suite, since=after)
        )
    )
    emit(frame, fmt, console, title=f"{metric} of {model}")
    if plot is not None:
        from posteval.plots import metric_trend_png

        def draw() -> None:
            try:
                metric_trend_png(frame, plot, title=f"{metric} of {model}")
            except OSError as exc:
                raise InputError(f"--plot {plot}: cannot write it: {exc.strerror or exc}") from exc

        _guard(draw)
        err_console.print(f"trend plot written to {plot}", highlight=False)


@baseline_app.command("set")
def baseline_set(
    model: Annotated[str, typer.Argument(help="The model name.")],
    suite: Annotated[str, typer.Option("--suite", "-s", help="The suite name.")],
    run: Annotated[str | None, typer.Option(help="Pin this run (id or prefix).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Pin this evaluated checkpoint folder.")] = None,
) -> None:
    """Pin the baseline new runs of MODEL on SUITE are compared with."""
    _quiet(False)
    from posteval.baseline import set_baseline

    def pin() -> None:
        run_id = queries.resolve_run_id(run) if run else None
        path = str(checkpoint.resolve()) if checkpoint else None
        set_baseline(model, suite, run_id=run_id, checkpoint_path=path)

    _guard(lambda: _with_schema(pin))
    console.print(f"baseline of {model} on {suite} pinned to {run or checkpoint}", highlight=False)


@baseline_app.command("list")
def baseline_list(fmt: FormatOpt = Format.table) -> None:
    """The pinned baselines."""
    _quiet(False)
    from posteval.baseline import baselines

    emit(_guard(lambda: _with_schema(baselines)), fmt, console, title="pinned baselines")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database (POSTEVAL_DATABASE_URL, default SQLite in POSTEVAL_HOME) to REVISION."""
    _quiet(False)
    from posteval.db.migrate import upgrade

    url = _guard(lambda: upgrade(None, revision))
    console.print(f"database at {revision}: {url}", highlight=False)


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Where models are built (default POSTEVAL_HOME/demo).")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build a tiny model, fine-tune it, evaluate it into the default database, show the results."""
    _quiet(verbose)
    from posteval.demo import run_demo

    _guard(lambda: run_demo(workdir, console=console, evaluate=run_evaluation, show=print_run))


app.command()(trigger)
app.command()(serve)


def main() -> None:  # pragma: no cover - console entry point alias
    """Entry point for ``python -m posteval``."""
    app(prog_name="posteval")


if __name__ == "__main__":  # pragma: no cover
    main()
