"""The regression gate as a person reads it first: a short Markdown summary, and the full comparison as
rounded rows, for the flow's two Prefect artifacts (the summary first, the table second).

The summary holds the verdict, the gated metrics only (rounded by :mod:`posteval.numbers`, the failing ones
marked), and where the full HTML report is. The table holds every compared metric with the gate verdict in
the third column, so a wide table never hides it; its cells are the terminal's (``comparison_rows``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posteval.numbers import ci, num
from posteval.views.run_details import comparison_rows

VERDICT_MARK = {"passed": "✅", "failed": "❌", "no_baseline": "➖", "incomparable": "⚠️"}
GATED_HEADERS = ["", "dataset/metric", "baseline", "this run", "change", "95% CI", "p", "gate"]


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def gated_rows(comparison: Any) -> list[list[object]]:
    """The gated metrics of ``comparison`` as rounded cells, regressions marked (GATED_HEADERS)."""
    rows: list[list[object]] = []
    for r in comparison.rows:
        if r.gate is None:
            continue
        rule = f"fails if drop > {num(r.gate['max_drop'], 'g')} and p < {num(r.gate['alpha'], 'g')}"
        rows.append(
            [
                "❌ **REGRESSION**" if r.regression else "✅ ok",
                f"{r.dataset}/{r.metric}",
                num(r.baseline),
                num(r.candidate),
                num(r.delta, "+.4f"),
                ci(r.ci_low, r.ci_high, "+.4f"),
                num(r.p_value, ".2g"),
                rule,
            ]
        )
    return rows


def gate_markdown(
    run_id: str,
    status: str,
    summary: str,
    comparison: Any | None,
    *,
    report: Path | None,
    report_problem: str = "",
    table_key: str | None = None,
) -> str:
    """The short summary: verdict, gated metrics, where the full report and the full table are."""
    mark = VERDICT_MARK.get(status, "")
    lines = [f"# {mark} posteval gate: {status}", "", f"run `{run_id}`", "", f"**{status}**: {summary}", ""]
    if comparison is not None:
        gated = gated_rows(comparison)
        if gated:
            lines += [_row(GATED_HEADERS), "|" + "---|" * len(GATED_HEADERS)]
            lines += [_row(cells) for cells in gated]
        else:
            lines.append("No metric of this suite is gated (the suite's `gates:` section is empty).")
        compared = f"all {len(comparison.rows)} compared metrics"
        lines += ["", f"Full table ({compared}): artifact `{table_key}`." if table_key else ""]
    if report is not None:
        lines += ["", f"Full report: [{report.name}]({report.resolve().as_uri()}) — `{report.resolve()}`"]
    else:
        why = f" ({report_problem})" if report_problem else ""
        lines += ["", f"Full report: not written{why}; write it with `posteval report {run_id[:12]}`."]
    return "\n".join(lines).rstrip() + "\n"


def comparison_records(comparison: Any) -> list[dict[str, str]]:
    """Every compared metric as a row of rounded text, the gate verdict third (``REGRESSION``, ``ok``, or
    ``-`` where the metric is not gated)."""
    (headers, rows), _ = comparison_rows(comparison, candidate="this run")
    order = ["dataset", "metric", "gate", *(h for h in headers if h not in ("dataset", "metric", "gate"))]
    return [{h: str(dict(zip(headers, row, strict=True))[h]) for h in order} for row in rows]
