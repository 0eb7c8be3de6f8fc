"""The commands that read the database: runs (list, show, reset, loss-curve), compare, report, history,
baseline (set, list) and db upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
import yaml

from posteval.cli.checks import check_gate, check_limit, check_status, parse_since, writable_file
from posteval.cli.common import FormatOpt, SinceOpt, guard, quiet, with_schema
from posteval.db import queries
from posteval.errors import InputError, short_error
from posteval.numbers import num
from posteval.views.output import Format, emit
from posteval.views.render import comparison_table, console, err_console, print_run


def runs_reset(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
) -> None:
    """Mark a stuck pending or running run failed, so the next evaluation claims and resumes it."""
    quiet(False)

    def reset() -> tuple[str, str]:
        from posteval.db import claims
        from posteval.db.engine import session_scope

        run_id = queries.resolve_run_id(run)
        with session_scope() as session:
            return run_id, claims.reset_run(session, run_id, "reset by operator (posteval runs reset)")

    run_id, previous = guard(lambda: with_schema(reset))
    if previous in ("pending", "running"):
        console.print(
            f"run {run_id[:12]}: {previous} -> failed; the next evaluation resumes it", highlight=False
        )
    else:
        console.print(f"run {run_id[:12]} is {previous}: nothing to reset", highlight=False)


GATE_HELP = "Only runs whose regression gate ended so: passed, failed, no_baseline or incomparable."


def runs_list(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    suite: Annotated[str | None, typer.Option(help="Only this suite name.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, succeeded or failed.")] = None,
    gate: Annotated[str | None, typer.Option(help=GATE_HELP)] = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 50,
    fmt: FormatOpt = Format.table,
) -> None:
    """List past runs, newest first, with their regression-gate outcome ("-": not gated)."""
    quiet(False)
    status, gate, after, limit = guard(
        lambda: (check_status(status), check_gate(gate), parse_since(since), check_limit(limit))
    )
    frame = guard(
        lambda: with_schema(
            lambda: queries.runs(model=model, suite=suite, status=status, gate=gate, since=after, limit=limit)
        )
    )
    if fmt is not Format.table:
        emit(frame, fmt, console)
        return
    compact = pd.DataFrame(
        {
            "run": frame["run_id"].str[:12],
            "model": frame["model"],
            "step": frame["step"].map(lambda v: num(v, "d")),
            "suite": frame["suite"],
            "trigger": frame["trigger"],
            "status": frame["status"],
            "gate": frame["gate"].map(lambda v: v or "-"),
            "created": pd.to_datetime(frame["created_at"]).dt.strftime("%Y-%m-%d %H:%M"),
        }
    )
    emit(compact, fmt, console, title="runs")


def runs_show(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
    fmt: FormatOpt = Format.table,
) -> None:
    """One run: its summary and its metrics."""
    quiet(False)
    guard(lambda: with_schema(lambda: print_run(queries.resolve_run_id(run), fmt)))


def runs_loss_curve(
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the PNG.")] = Path("loss.png"),
) -> None:
    """Draw the run's checkpoint's train and validation loss curve as a PNG."""
    quiet(False)
    guard(lambda: writable_file(out, "--out"))

    def draw() -> Path:
        run_id = queries.resolve_run_id(run)
        summary = queries.run_summary(run_id)
        curve = queries.loss_curve(int(summary["checkpoint_id"]))  # type: ignore[call-overload]
        if curve.empty:
            raise InputError(f"run {run_id[:12]}: its checkpoint has no stored loss history")
        from posteval.views.plots import loss_curve_png

        return loss_curve_png(curve, out, title=f"{summary['model']} (step {summary['step']})")

    console.print(f"loss curve written to {guard(lambda: with_schema(draw))}", highlight=False)


def compare(
    baseline: Annotated[str, typer.Argument(help="The baseline run (id or prefix).")],
    candidate: Annotated[str, typer.Argument(help="The candidate run (id or prefix).")],
    fmt: FormatOpt = Format.table,
) -> None:
    """Compare two runs of one suite metric by metric: delta, its CI, a paired test, flipped examples."""
    quiet(False)
    from posteval.judging.compare import compare_runs

    def run() -> Any:
        base_id, cand_id = queries.resolve_run_id(baseline), queries.resolve_run_id(candidate)
        return compare_runs(base_id, cand_id)

    comparison = guard(lambda: with_schema(run))
    frame = comparison.to_frame()
    if fmt is not Format.table:
        emit(frame, fmt, console)
        return
    console.print(comparison_table(comparison))


REPORT_OUT_HELP = (
    "The HTML file (default: posteval-report-<run12>.html, or posteval-lineage-<model>-<suite>.html)."
)


def report(
    run: Annotated[
        str | None, typer.Argument(help="A run id or a unique prefix of at least 4 characters.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Instead of RUN: the whole lineage of this model.")
    ] = None,
    suite: Annotated[
        str | None, typer.Option("--suite", "-s", help="With --model: the suite (its name or its file).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help=REPORT_OUT_HELP),
    ] = None,
) -> None:
    """Write one self-contained HTML file: a run's report (metrics, baseline comparison, health, examples),
    or with --model and --suite the model's whole history on the suite and which checkpoint to ship."""
    quiet(False)
    if out is not None:
        guard(lambda: writable_file(out, "--out"))
    if model is not None or suite is not None:
        guard(lambda: lineage_report(run, model, suite, out))
        return
    if run is None:
        guard(lambda: _refuse("give a RUN, or --model and --suite for a model's whole history"))
    from posteval.views.report import write_report

    def write() -> Path:
        run_id = queries.resolve_run_id(str(run))
        return write_report(run_id, out or Path(f"posteval-report-{run_id[:12]}.html"))

    console.print(f"report written to {guard(lambda: with_schema(write))}", highlight=False)


def _refuse(message: str) -> None:
    raise InputError(message)


def suite_name(path: Path) -> str:
    """The ``name:`` of the suite file at ``path``, read without validating the suite again (that loads
    every metric family; a report only needs the name its runs were stored under)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"--suite {path}: cannot read a suite name from it: {short_error(exc)}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InputError(f"--suite {path}: expected a suite file with a 'name'")
    return data["name"]


def lineage_report(run: str | None, model: str | None, suite: str | None, out: Path | None) -> None:
    """``report --model M --suite S``: the lineage report (refused with a RUN, or without both options)."""
    if run is not None:
        raise InputError("give either a RUN or --model and --suite, not both")
    if model is None or suite is None:
        raise InputError(f"--{'suite' if model else 'model'} is missing: a lineage is one model on one suite")
    if Path(suite).is_file():
        suite = suite_name(Path(suite))
    from posteval.views.lineage_report import write_lineage_report

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{model}-{suite}")
    target = out or Path(f"posteval-lineage-{safe}.html")
    written = with_schema(lambda: write_lineage_report(model, suite, target))
    console.print(f"lineage report written to {written}", highlight=False)


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
    quiet(False)
    if plot is not None:
        guard(lambda: writable_file(plot, "--plot"))
    after = guard(lambda: parse_since(since))
    frame = guard(
        lambda: with_schema(
            lambda: queries.metric_history(metric, model=model, dataset=dataset, suite=suite, since=after)
        )
    )
    emit(frame, fmt, console, title=f"{metric} of {model}")
    if plot is not None:
        from posteval.views.plots import metric_trend_png

        def draw() -> None:
            try:
                metric_trend_png(frame, plot, title=f"{metric} of {model}")
            except OSError as exc:
                raise InputError(f"--plot {plot}: cannot write it: {exc.strerror or exc}") from exc

        guard(draw)
        err_console.print(f"trend plot written to {plot}", highlight=False)


def baseline_set(
    model: Annotated[str, typer.Argument(help="The model name.")],
    suite: Annotated[str, typer.Option("--suite", "-s", help="The suite name.")],
    run: Annotated[str | None, typer.Option(help="Pin this run (id or prefix).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Pin this evaluated checkpoint folder.")] = None,
) -> None:
    """Pin the baseline new runs of MODEL on SUITE are compared with."""
    quiet(False)
    from posteval.judging.baseline import set_baseline

    def pin() -> None:
        run_id = queries.resolve_run_id(run) if run else None
        path = str(checkpoint.resolve()) if checkpoint else None
        set_baseline(model, suite, run_id=run_id, checkpoint_path=path)

    guard(lambda: with_schema(pin))
    console.print(f"baseline of {model} on {suite} pinned to {run or checkpoint}", highlight=False)


def baseline_list(fmt: FormatOpt = Format.table) -> None:
    """The pinned baselines."""
    quiet(False)
    from posteval.judging.baseline import baselines

    emit(guard(lambda: with_schema(baselines)), fmt, console, title="pinned baselines")


def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Bring the database (POSTEVAL_DATABASE_URL, default SQLite in POSTEVAL_HOME) to REVISION."""
    quiet(False)
    from posteval.db.migrate import upgrade

    url = guard(lambda: upgrade(None, revision))
    console.print(f"database at {revision}: {url}", highlight=False)
