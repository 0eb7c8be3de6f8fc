"""The `posteval` command: evaluate checkpoints, list runs, manage the database, run the demo.

Flows are imported lazily (inside commands), so the rest of the core never imports Prefect.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from posteval import history, progress
from posteval.errors import InputError, PostevalError
from posteval.output import Format, emit, to_json

app = typer.Typer(
    help="Evaluate fine-tuned checkpoints, keep every result, catch regressions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Past runs.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")

# Piped or captured output has no terminal width to follow: give tables room instead of rich's 80.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)

FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json or csv")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and posteval's logs.")]


def _quiet(verbose: bool) -> None:
    """Keep Prefect's and the libraries' log lines out of the way unless asked for."""
    level = "INFO" if verbose else "ERROR"
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


def _fail(exc: PostevalError) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a PostevalError becomes one message and its exit code, never a traceback."""
    try:
        return fn()
    except PostevalError as exc:
        _fail(exc)


class RichProgress:
    """A rich progress bar as the core's progress sink."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar

    def start(self, description: str, total: int) -> object:
        return self.bar.add_task(description, total=total)

    def advance(self, job: object, amount: int) -> None:
        self.bar.advance(job, amount)  # type: ignore[arg-type]

    def finish(self, job: object) -> None:
        self.bar.refresh()


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


def run_evaluation(
    checkpoint: str,
    suite: str,
    *,
    trigger: str = "manual",
    model_name: str | None = None,
    force: bool = False,
    database_url: str | None = None,
    adapter_base: str | None = None,
) -> str:
    """Check the inputs, bring the database to head, run the post-training flow; returns the run id.

    Bad input is found here, before Prefect starts, so it costs a second and prints one line.
    """
    from posteval.checkpoint import resolve_checkpoint
    from posteval.db.migrate import upgrade
    from posteval.pipeline import prepare_dataset
    from posteval.suite import load_suite

    resolve_checkpoint(checkpoint, model_name=model_name, base_path=adapter_base)
    loaded = load_suite(suite).suite
    if loaded.base_model:
        resolve_checkpoint(loaded.base_model)
    for spec in loaded.all_datasets():
        prepare_dataset(spec)
    upgrade(database_url)
    from flows.post_training import evaluate_checkpoint

    with _progress_bar() as bar:
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
            )
        finally:
            progress.set_sink(None)


def metric_table(metrics: pd.DataFrame) -> Table:
    """Metrics as a compact terminal table: value, 95% CI, n, and which way is better."""
    table = Table(title="metrics", header_style="bold")
    for name, justify in (
        ("dataset", "left"),
        ("metric", "left"),
        ("value", "right"),
        ("95% CI", "right"),
        ("n", "right"),
        ("better", "center"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in metrics.itertuples(index=False):
        ci = "-" if pd.isna(row.ci_low) else f"[{row.ci_low:.4f}, {row.ci_high:.4f}]"
        table.add_row(
            row.dataset, row.name, f"{row.value:.4f}", ci, str(row.n), "↑" if row.higher_is_better else "↓"
        )
    return table


VERDICT_STYLE = {
    "healthy": "green",
    "none": "green",
    "overfitting": "red",
    "forgetting": "red",
    "underfitting": "yellow",
    "unknown": "yellow",
}


def print_health(health: dict[str, dict[str, Any]]) -> None:
    """The overfitting and forgetting verdicts, with the per-metric changes against the base."""
    for kind in ("overfitting", "forgetting"):
        if kind not in health:
            continue
        report = health[kind]
        style = VERDICT_STYLE.get(str(report["verdict"]), "bold")
        label = "training health" if kind == "overfitting" else "forgetting vs base"
        console.print(
            f"{label}: [{style}]{report['verdict']}[/] — {escape(str(report['reason']))}", highlight=False
        )
        changes = report["details"].get("changes", []) if kind == "forgetting" else []
        if changes:
            table = Table(header_style="bold")
            for column in ("dataset", "metric", "base", "fine-tune", "worse by", "p", "test", "forgotten"):
                table.add_column(
                    column, justify="left" if column in ("dataset", "metric", "test") else "right"
                )
            for c in changes:
                forgotten = "-" if c["forgotten_share"] is None else f"{c['forgotten_share']:.1%}"
                table.add_row(
                    c["dataset"],
                    c["metric"],
                    f"{c['base']:.4g}",
                    f"{c['tuned']:.4g}",
                    f"{c['relative_worsening']:+.1%}",
                    f"{c['p_value']:.2g}",
                    c["test"],
                    forgotten,
                    style="red" if c["forgets"] else None,
                )
            console.print(table)


def print_run(run_id: str, fmt: Format = Format.table, database_url: str | None = None) -> None:
    """The run's summary and metric table (or JSON with both)."""
    summary = history.run_summary(run_id, database_url=database_url)
    metrics = history.run_metrics(run_id, database_url=database_url)
    health = history.run_health(run_id, database_url=database_url)
    if fmt is Format.json:
        from posteval.output import records

        print(to_json({**summary, "metrics": records(metrics), "health": health}))
        return
    if fmt is Format.csv:
        emit(metrics, fmt, console)
        return
    console.print(
        f"run [bold]{run_id}[/]  model {summary['model']}  suite {summary['suite']}  "
        f"status [bold]{summary['status']}[/]",
        highlight=False,
    )
    console.print(metric_table(metrics))
    print_health(health)
    for warning in summary["warnings"]:  # type: ignore[attr-defined]
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if summary["error"]:
        console.print(f"[red]error:[/] {summary['error']}", highlight=False)


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
    fmt: FormatOpt = Format.table,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate CHECKPOINT on a suite; exit 0 ok, 2 bad input, 3 runtime error."""
    _quiet(verbose)
    run_id = _guard(
        lambda: run_evaluation(checkpoint, str(suite), model_name=model_name, force=force, adapter_base=base)
    )
    _guard(lambda: print_run(run_id, fmt))


@runs_app.command("list")
def runs_list(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    suite: Annotated[str | None, typer.Option(help="Only this suite name.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, succeeded or failed.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 50,
    fmt: FormatOpt = Format.table,
) -> None:
    """List past runs, newest first."""
    _quiet(False)
    frame = _guard(
        lambda: _with_schema(lambda: history.runs(model=model, suite=suite, status=status, limit=limit))
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
    _guard(lambda: _with_schema(lambda: print_run(history.resolve_run_id(run), fmt)))


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

    def draw() -> Path:
        run_id = history.resolve_run_id(run)
        summary = history.run_summary(run_id)
        curve = history.loss_curve(int(summary["checkpoint_id"]))  # type: ignore[call-overload]
        if curve.empty:
            raise InputError(f"run {run_id[:12]}: its checkpoint has no stored loss history")
        from posteval.plots import loss_curve_png

        return loss_curve_png(curve, out, title=f"{summary['model']} (step {summary['step']})")

    console.print(f"loss curve written to {_guard(lambda: _with_schema(draw))}", highlight=False)


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


def main() -> None:  # pragma: no cover - console entry point alias
    """Entry point for ``python -m posteval``."""
    app(prog_name="posteval")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
