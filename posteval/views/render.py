"""Terminal rendering: the consoles, the progress bar, a run's metrics, health and gate."""

from __future__ import annotations

import os
import sys
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from posteval.db import queries
from posteval.numbers import ci, num
from posteval.views.output import Format, emit, records, to_json
from posteval.views.run_details import comparison_rows, detail_table, forgetting_table

# Piped or captured output has no terminal width to follow: give tables room instead of rich's 80.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)


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


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


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
        table.add_row(
            row.dataset,
            row.name,
            num(row.value),
            ci(row.ci_low, row.ci_high),
            str(row.n),
            "↑" if row.higher_is_better else "↓",
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
            (headers, rows), forgets = forgetting_table(changes)
            table = Table(header_style="bold")
            for column in headers:
                table.add_column(
                    column, justify="left" if column in ("dataset", "metric", "test") else "right"
                )
            for row, bad in zip(rows, forgets, strict=True):
                table.add_row(*(str(cell) for cell in row), style="red" if bad else None)
            console.print(table)


def print_details(reports: list[dict[str, Any]]) -> None:
    """The run's reports (confusion matrices, per-class tables), each as a table of its own."""
    for report in reports:
        title = escape(f"{report['dataset']}: {report['name']}")
        found = detail_table(report["name"], report["details"])
        if found is None:
            console.print(f"{title}: no examples", highlight=False)
            continue
        headers, rows = found
        table = Table(title=title, header_style="bold")
        for header in headers:
            table.add_column(str(header), justify="left" if header in headers[:1] else "right")
        for row in rows:
            table.add_row(*(_detail_cell(v) for v in row))
        console.print(table)


def _detail_cell(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_run(run_id: str, fmt: Format = Format.table, database_url: str | None = None) -> None:
    """The run's summary and metric table (or JSON with both)."""
    summary = queries.run_summary(run_id, database_url=database_url)
    metrics = queries.run_metrics(run_id, database_url=database_url)
    health = queries.run_health(run_id, database_url=database_url)
    reports = queries.run_details(run_id, database_url=database_url)
    if fmt is Format.json:
        print(to_json({**summary, "metrics": records(metrics), "details": reports, "health": health}))
        return
    if fmt is Format.csv:
        emit(metrics, fmt, console)
        return
    console.print(
        f"run [bold]{run_id}[/]  model {summary['model']}  suite {summary['suite']}  "
        f"status [bold]{summary['status']}[/]",
        highlight=False,
    )
    step = num(summary["step"], "d")
    console.print(f"checkpoint {escape(str(summary['checkpoint']))} (step {step})", highlight=False)
    console.print(metric_table(metrics))
    print_details(reports)
    print_health(health)
    if summary["gate_status"]:
        style = {"passed": "green", "failed": "red"}.get(str(summary["gate_status"]), "yellow")
        console.print(
            f"regression gate: [{style}]{summary['gate_status']}[/] — {escape(str(summary['gate_summary']))}",
            highlight=False,
        )
    for warning in summary["warnings"]:  # type: ignore[attr-defined]
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if summary["error"]:
        console.print(f"[red]error:[/] {summary['error']}", highlight=False)


def comparison_table(comparison: Any) -> Table:
    """A comparison as a terminal table, regressions in red."""
    table = Table(
        title=f"{comparison.baseline_run_id[:12]} -> {comparison.candidate_run_id[:12]}", header_style="bold"
    )
    (headers, rows), regressions = comparison_rows(comparison, candidate="candidate")
    for column in headers:
        table.add_column(
            column, justify="left" if column in ("dataset", "metric", "test", "gate") else "right"
        )
    for row, regression in zip(rows, regressions, strict=True):
        table.add_row(*(str(cell) for cell in row), style="red" if regression else None)
    return table
