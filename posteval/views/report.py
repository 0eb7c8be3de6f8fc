"""`posteval report RUN`: one self-contained HTML page per run, safe to mail or attach to a ticket.

Sections: the run, metrics with CIs, training health with the loss curve, the comparison with the
baseline, confusion matrices, the judge's verdicts, the worst examples, code datasets' failing samples with
the failing test's output (report_code), the examples flipped against the baseline, and the human
evaluation (raters, their agreement, and the judge's agreement with them). Every
value from the database or the data is HTML-escaped; the plot is an inline PNG, and the page's
Content-Security-Policy forbids scripts and every request, so nothing in it runs or loads. Which model
outputs and references are shown is explained in :mod:`posteval.views.report_data`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from posteval.db import queries, reads
from posteval.db.engine import session_scope
from posteval.errors import InputError
from posteval.judging.baseline import baseline_for
from posteval.judging.compare import Comparison, compare_runs
from posteval.numbers import ci, num
from posteval.views.plots import loss_curve_png
from posteval.views.report_code import code_outcomes
from posteval.views.report_data import Examples, ReportRun, load_run
from posteval.views.report_html import (
    Html,
    badge,
    join,
    matrix,
    note,
    page,
    png,
    table,
    tag,
    text,
    when,
)
from posteval.views.report_human import human_section
from posteval.views.report_judges import judge_section
from posteval.views.run_details import comparison_rows, detail_table, forgetting_table

WORST = 10  # worst examples shown per dataset
FLIPS = 20  # flipped examples shown per direction and dataset


def _header(run: ReportRun) -> Html:
    s = run.summary
    took = s["finished_at"] - s["started_at"] if s["started_at"] and s["finished_at"] else None
    facts: list[tuple[str, object]] = [
        ("run", s["run_id"]),
        ("model", s["model"]),
        ("checkpoint", f"{s['checkpoint']} (step {'-' if s['step'] is None else s['step']})"),
        ("checkpoint fingerprint", s["checkpoint_fingerprint"]),
        ("suite", s["suite"]),
        ("status", badge(s["status"])),
        ("trigger", s["trigger"]),
        ("created", when(s["created_at"])),
        ("started / finished", f"{when(s['started_at'])} / {when(s['finished_at'])}"),
        ("took", f"{took.total_seconds():.1f} s" if took else None),
        (
            "regression gate",
            join([badge(s["gate_status"]), " ", s["gate_summary"]]) if s["gate_status"] else None,
        ),
    ]
    if s["error"]:
        facts.append(("error", text(s["error"])))
    warnings = join(tag("li", w) for w in s["warnings"])
    return join([table((), facts, cls="kv"), tag("ul", warnings, "warnings") if warnings else ""])


def _metrics(run: ReportRun) -> Html:
    frame = queries.run_metrics(run.id, database_url=run.url)
    rows = [
        (
            r.dataset,
            r.name,
            num(r.value),
            ci(r.ci_low, r.ci_high),
            r.n,
            "higher" if r.higher_is_better else "lower",
        )
        for r in frame.itertuples(index=False)
    ]
    headers = ["dataset", "metric", "value", "95% CI", "n", "better"]
    return table(headers, rows, table_id="metric-table") if rows else note("no metrics stored for this run")


def _overfitting(report: dict[str, Any]) -> list[object]:
    facts = [
        (key.replace("_", " "), num(value, ".4g") if isinstance(value, float) else value)
        for key, value in report["details"].items()
        if not isinstance(value, dict | list)
    ]
    heading = tag("h3", join(["Overfitting ", badge(report["verdict"])]))
    return [heading, tag("p", report["reason"]), table((), facts, cls="kv")]


def _forgetting(report: dict[str, Any]) -> list[object]:
    (headers, rows), forgets = forgetting_table(report["details"].get("changes", []))
    heading = tag("h3", join(["Forgetting vs the base ", badge(report["verdict"])]))
    return [heading, tag("p", report["reason"]), table(headers, rows, bad=forgets)]


def _health(run: ReportRun) -> Html:
    reports = queries.run_health(run.id, database_url=run.url)
    over, forgetting = reports.get("overfitting"), reports.get("forgetting")
    parts = (
        _overfitting(over)
        if over
        else [note("no overfitting verdict stored (the suite has no training_health)")]
    )
    curve = queries.loss_curve(int(run.summary["checkpoint_id"]), database_url=run.url)
    if not curve.empty:
        with tempfile.TemporaryDirectory() as tmp:
            title = f"{run.summary['model']} (step {run.summary['step']})"
            drawn = loss_curve_png(curve, Path(tmp) / "loss.png", title=title).read_bytes()
        parts.append(png(drawn, "train and validation loss by step"))
    parts += (
        _forgetting(forgetting)
        if forgetting
        else [note("no forgetting verdict stored (the suite has no base_model)")]
    )
    return join(parts)


def _comparison(baseline_id: str | None, comparison: Comparison | None, refused: str) -> Html:
    if baseline_id is None:
        return note("no baseline: nothing pinned and no earlier succeeded run of this model and suite")
    if comparison is None:
        return tag("p", f"baseline {baseline_id}: comparison refused: {refused}")
    if not comparison.rows:
        return note(f"baseline {baseline_id}: no metric in common with this run")
    (headers, rows), regressions = comparison_rows(comparison, candidate="this run")
    summary = tag("p", join(["baseline ", tag("b", baseline_id), f": {comparison.summary()}"]))
    return join([summary, table(headers, rows, bad=regressions)])


def _reports(run: ReportRun) -> Html:
    """The run's details: confusion matrices as heat-mapped matrices, per-class tables and reports."""
    parts: list[object] = []
    for report in run.reports:
        details = report["details"]
        parts.append(tag("h3", f"{report['dataset']}: {report['name']}"))
        found = detail_table(report["name"], details)
        if found is None:
            parts.append(note("no examples"))
        elif "matrix" in details:
            parts.append(matrix(details["labels"], details["matrix"]))
        else:
            headers, rows = found
            parts.append(table(headers, [[_shown(v) for v in row] for row in rows]))
    return join(parts) if parts else note("no reports (confusion_matrix, per_class...) in this run")


def _shown(value: object) -> str:
    return "" if value is None else num(value) if isinstance(value, float) else str(value)


def _example(examples: Examples, key: str) -> tuple[Html, Html]:
    prompt, reference = examples.get(key, (None, None))
    return text(prompt), text(reference)


def _worst(run: ReportRun) -> Html:
    """Per dataset, the examples with the worst scores of its first metric with per-example scores."""
    with session_scope(run.url) as session:
        scored = reads.example_scores(session, run.id)
    scores: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for dataset, metric, key, value in scored:
        if value is not None:  # an undefined (NaN) score ranks nowhere
            scores.setdefault((dataset, metric), []).append((key, value))
    parts: list[object] = []
    done: set[str] = set()
    for dataset, metric, higher, _ in run.metrics:
        if dataset in done or (dataset, metric) not in scores:
            continue
        done.add(dataset)
        ranked = sorted(scores[dataset, metric], key=lambda kv: (kv[1] if higher else -kv[1], kv[0]))
        outputs, outputs_note = run.outputs(dataset)
        examples, examples_note = run.examples(dataset)
        rows = [(k, num(v, ".4g"), *_example(examples, k), text(outputs.get(k))) for k, v in ranked[:WORST]]
        parts.append(tag("h3", f"{dataset}: the {len(rows)} of {len(ranked)} with the worst {metric}"))
        parts += [note(outputs_note), note(examples_note)]
        parts.append(table(["key", metric, "input", "reference", "output"], rows))
    return join(parts) if parts else note("no per-example scores stored for this run")


def _flips(run: ReportRun, comparison: Comparison | None) -> Html:
    """Examples right in the baseline and wrong now, and the reverse, with both runs' outputs.

    Metrics of one dataset whose flips are the same examples (accuracy, exact match) share one table.
    """
    if comparison is None:
        return note("no comparison with a baseline, so no flipped examples")
    groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for row in comparison.rows:
        if row.worsened or row.improved:
            groups.setdefault((row.dataset, tuple(row.worsened), tuple(row.improved)), []).append(row.metric)
    if not groups:
        return note("no example flipped between the baseline and this run")
    base = load_run(comparison.baseline_run_id, run.url)
    directions = (
        "worse now: right in the baseline, wrong in this run",
        "better now: wrong in the baseline, right now",
    )
    headers = ["key", "input", "reference", "baseline output", "this run's output"]
    parts: list[object] = []
    for (dataset, worsened, improved), metrics in groups.items():
        ours, ours_note = run.outputs(dataset)
        theirs, theirs_note = base.outputs(dataset)
        examples, examples_note = run.examples(dataset)  # the same data: comparable runs share fingerprints
        parts += [tag("h3", f"{dataset} ({', '.join(metrics)})"), note(ours_note), note(examples_note)]
        parts.append(note(f"baseline {theirs_note}" if theirs_note else ""))
        for title, keys in zip(directions, (worsened, improved), strict=True):
            shown = f"the first {FLIPS} of {len(keys)}" if len(keys) > FLIPS else str(len(keys))
            rows = [(k, *_example(examples, k), text(theirs.get(k)), text(ours.get(k))) for k in keys[:FLIPS]]
            parts += [tag("h4", f"{title}: {shown}"), table(headers, rows) if rows else ""]
    return join(parts)


def render_report(run_id: str, *, database_url: str | None = None) -> str:
    """The report of run ``run_id`` (an id or a unique prefix) as one HTML document."""
    run = load_run(queries.resolve_run_id(run_id, database_url=database_url), database_url)
    baseline_id = baseline_for(run.id, database_url=database_url)
    comparison, refused = None, ""
    if baseline_id is not None:
        gates, seed = (run.suite.gates, run.suite.seed) if run.suite else ({}, 0)
        try:
            comparison = compare_runs(baseline_id, run.id, gates=gates, seed=seed, database_url=database_url)
        except InputError as exc:  # different suites or data: say why rather than compare
            refused = str(exc)
    sections = [
        ("run", "Run", _header(run)),
        ("metrics", "Metrics", _metrics(run)),
        ("health", "Training health", _health(run)),
        ("comparison", "Comparison with the baseline", _comparison(baseline_id, comparison, refused)),
        ("reports", "Reports", _reports(run)),
        ("judge", "Judge verdicts", judge_section(run)),
        ("worst", "Worst examples", _worst(run)),
        *([("code", "Code execution", code)] if (code := code_outcomes(run)) is not None else []),
        ("flips", "Flipped examples", _flips(run, comparison)),
        ("human", "Human evaluation", human_section(run)),
    ]
    s = run.summary
    return page(f"posteval report: {s['model']} on {s['suite']}, run {run.id[:12]}", sections)


def write_report(run_id: str, path: Path, *, database_url: str | None = None) -> Path:
    """Write the report of run ``run_id`` to ``path`` (folders created); returns ``path``."""
    document = render_report(run_id, database_url=database_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path
