"""`posteval report --model M --suite S`: a model's whole history on a suite as one self-contained HTML page.

Sections: which checkpoint to ship (the best on the suite's primary metric, with a paired test of every
other checkpoint against it, :mod:`posteval.judging.ship`), every checkpoint in step order with its
metrics and CIs, trend charts (a log axis for perplexity) and the gate verdicts. Built from the run
report's blocks (:mod:`posteval.views.report_html`): every value escaped, plots inline, no script.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from posteval.judging.ship import Lineage, LineageRun, load_lineage
from posteval.numbers import ci, num
from posteval.views.plots import metric_trend_png
from posteval.views.report_html import Html, badge, join, note, page, png, table, tag

LOG_SCALE = ("perplexity",)  # metrics drawn on a log axis (their name, or their name's start)


def _step(run: LineageRun) -> str:
    return num(run.step, "d")


def _value(run: LineageRun, dataset: str, metric: str) -> str:
    rows = run.metrics[(run.metrics["dataset"] == dataset) & (run.metrics["name"] == metric)]
    if rows.empty:
        return "-"
    row = rows.iloc[0]
    return f"{num(row['value'])} {ci(row['ci_low'], row['ci_high'])}"


def _ship(lineage: Lineage) -> Html:
    decision = lineage.decision
    if decision.primary is None or decision.best_run_id is None:
        return note(f"no checkpoint to recommend: {decision.why}")
    dataset, metric = decision.primary.split("/", 1)
    best = next(r for r in lineage.runs if r.run_id == decision.best_run_id)
    better = "higher" if decision.higher_is_better else "lower"
    lead = tag(
        "p",
        join(
            [
                tag("strong", f"Ship step {_step(best)}: {best.checkpoint}"),
                f" (run {best.run_id[:12]}), the best on {decision.primary} ({decision.why}; {better} is "
                f"better): {_value(best, dataset, metric)}. Every other checkpoint is compared with it by a "
                f"paired test at alpha {num(decision.alpha, 'g')}.",
            ]
        ),
        "ship",
    )
    headers = ["step", "run", "checkpoint", decision.primary, "vs best", "95% CI", "p", "test", "verdict"]
    rows: list[list[object]] = []
    for run in lineage.runs:
        cells: list[object] = [_step(run), run.run_id[:12], run.checkpoint, _value(run, dataset, metric)]
        if run.run_id == best.run_id:
            rows.append([*cells, "-", "-", "-", "-", badge("ship this")])
            continue
        versus = decision.versus[run.run_id]
        if versus.note:
            verdict: object = versus.note
        elif versus.significant:
            verdict = "significantly worse" if _worse(versus.delta, decision.higher_is_better) else "better"
        else:
            verdict = "no significant difference"
        rows.append(
            [
                *cells,
                num(versus.delta, "+.4f"),
                ci(versus.ci_low, versus.ci_high, "+.4f"),
                num(versus.p_value, ".3g"),
                versus.test,
                verdict,
            ]
        )
    return join([lead, table(headers, rows, table_id="ship-table")])


def _worse(delta: float | None, higher_is_better: bool) -> bool:
    return delta is not None and (delta < 0 if higher_is_better else delta > 0)


def _metric_keys(lineage: Lineage) -> list[tuple[str, str]]:
    """Every (dataset, metric) of the lineage, in the order the runs stored them."""
    keys: dict[tuple[str, str], None] = {}
    for run in lineage.runs:
        for dataset, metric in zip(run.metrics["dataset"], run.metrics["name"], strict=True):
            keys.setdefault((str(dataset), str(metric)), None)
    return list(keys)


def _checkpoints(lineage: Lineage) -> Html:
    keys = _metric_keys(lineage)
    headers = ["step", "run", "checkpoint", "gate", *(f"{d}/{m}" for d, m in keys)]
    rows = [
        [
            _step(r),
            r.run_id[:12],
            r.checkpoint,
            badge(r.gate_status or "-"),
            *(_value(r, d, m) for d, m in keys),
        ]
        for r in lineage.runs
    ]
    return table(headers, rows, table_id="checkpoint-table")


def _trends(lineage: Lineage) -> Html:
    frames = [r.metrics.assign(run_id=r.run_id, step=r.step) for r in lineage.runs]
    history = pd.concat(frames, ignore_index=True).rename(columns={"name": "metric"})
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (metric, rows) in enumerate(history.groupby("metric", sort=False)):
            log_scale = str(metric).startswith(LOG_SCALE)
            title = f"{metric} of {lineage.model}" + (" (log scale)" if log_scale else "")
            drawn = metric_trend_png(rows, Path(tmp) / f"{i}.png", title=title, log_scale=log_scale)
            parts.append(png(drawn.read_bytes(), title))
    return join(parts)


def _gates(lineage: Lineage) -> Html:
    rows = [[_step(r), r.run_id[:12], badge(r.gate_status or "-"), r.gate_summary] for r in lineage.runs]
    return table(["step", "run", "gate", "summary"], rows, table_id="gate-table")


def render_lineage_report(model: str, suite: str, *, database_url: str | None = None) -> str:
    """The lineage report of ``model`` on the suite named ``suite`` as one HTML document."""
    lineage = load_lineage(model, suite, database_url=database_url)
    sections = [
        ("ship", "Which checkpoint to ship", _ship(lineage)),
        ("checkpoints", f"Checkpoints ({len(lineage.runs)}, in step order)", _checkpoints(lineage)),
        ("trends", "Trends", _trends(lineage)),
        ("gates", "Gate verdicts", _gates(lineage)),
    ]
    return page(f"posteval lineage: {model} on {suite}", sections)


def write_lineage_report(model: str, suite: str, path: Path, *, database_url: str | None = None) -> Path:
    """Write the lineage report of ``model`` on ``suite`` to ``path`` (folders created); returns ``path``."""
    document = render_lineage_report(model, suite, database_url=database_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path
