"""The report's code section: per code dataset, the problems whose samples did not all pass, each failing
sample with its outcome (failed with the exception type, timed out, killed for memory), the failing test's
line and what the program printed."""

from __future__ import annotations

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.views.report_data import ReportRun
from posteval.views.report_html import Html, join, note, table, tag, text

SHOWN = 20  # failing samples shown per dataset


def code_outcomes(run: ReportRun) -> Html | None:
    """The section's body, or None when the run has no code dataset."""
    with session_scope(run.url) as session:
        rows = reads.example_details(session, run.id)
    first_metric: dict[str, str] = {}
    problems: dict[str, list[tuple[str, dict[str, object]]]] = {}
    for dataset, metric, key, detail in rows:
        if first_metric.setdefault(dataset, metric) == metric and "samples" in detail:
            problems.setdefault(dataset, []).append((key, detail))
    if not problems:
        return None
    parts: list[object] = []
    for dataset, details in problems.items():
        total = sum(int(str(detail["n"])) for _, detail in details)
        passed = sum(int(str(detail["passed"])) for _, detail in details)
        parts.append(tag("h3", f"{dataset}: {passed} of {total} samples passed"))
        failing: list[tuple[str, int, dict[str, object]]] = []
        for key, detail in details:
            samples = detail["samples"]
            for i, sample in enumerate(samples if isinstance(samples, list) else []):
                if isinstance(sample, dict) and sample.get("status") != "passed":
                    failing.append((key, i, sample))
        if not failing:
            parts.append(note("every sample passed"))
            continue
        shown = failing[:SHOWN]
        if len(failing) > SHOWN:
            parts.append(note(f"the first {SHOWN} of {len(failing)} failing samples"))
        table_rows = [
            (
                key,
                str(i),
                str(sample.get("status")),
                text(sample.get("error")),
                text(sample.get("message")),
                text(sample.get("output")),
            )
            for key, i, sample in shown
        ]
        parts.append(
            table(["problem", "sample", "outcome", "exception", "failing test", "output"], table_rows)
        )
    return join(parts)
