"""A run's reports (confusion matrix, per-class table, classification report) as plain tables.

Reports are stored as the run's details, never as metrics; ``runs show``, the HTML report and the flow's
Prefect artifact all show them through :func:`detail_table`, so the three agree. The forgetting verdict's
per-metric changes are one table the same way (:func:`forgetting_table`), in the terminal and the report,
and so is a comparison with the baseline (:func:`comparison_rows`).
"""

from __future__ import annotations

from typing import Any

from posteval.numbers import ci, num

Table = tuple[list[str], list[list[object]]]  # headers, rows

_MEASURES = ("precision", "recall", "f1-score", "support")


def _base(name: str) -> str:
    """The report a stored name belongs to (option suffixes such as ``_casefold`` removed)."""
    for report in ("confusion_matrix", "per_class", "classification_report"):
        if name == report or name.startswith(f"{report}_"):
            return report
    return name


def detail_table(name: str, details: dict[str, Any]) -> Table | None:
    """The report ``name`` as (headers, rows), or None when it holds no table (e.g. no examples)."""
    kind = _base(name)
    if kind == "confusion_matrix":
        labels, matrix = details.get("labels") or [], details.get("matrix") or []
        if not matrix:
            return None
        return ["true \\ predicted", *labels], [
            [label, *row] for label, row in zip(labels, matrix, strict=True)
        ]
    if kind == "per_class":
        table = details.get("per_class") or {}
        if not table:
            return None
        headers = ["label", "precision", "recall", "f1", "support"]
        return headers, [[label, *(values[h] for h in headers[1:])] for label, values in table.items()]
    if kind == "classification_report":
        report = details.get("report") or {}
        if not report:
            return None
        rows: list[list[object]] = []
        for key, values in report.items():
            if isinstance(values, dict):
                rows.append([key, *(values.get(m) for m in _MEASURES)])
            else:  # scikit-learn's single "accuracy" figure
                rows.append([key, None, None, values, None])
        return ["", *_MEASURES], rows
    return None


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")  # a label with a pipe must not split the Markdown row


def markdown(reports: list[dict[str, Any]]) -> str:
    """Reports (``dataset``, ``name``, ``details`` each) as Markdown sections with tables."""
    parts = []
    for report in reports:
        table = detail_table(report["name"], report["details"])
        parts.append(f"### {report['dataset']}: {report['name']}\n")
        if table is None:
            parts.append("no examples\n")
            continue
        headers, rows = table
        lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


FORGETTING_HEADERS = [
    "dataset", "metric", "base", "fine-tune", "worse by", "p", "test", "forgotten", "examples lost",
]  # fmt: skip


def forgetting_table(changes: list[dict[str, Any]]) -> tuple[Table, list[bool]]:
    """The forgetting report's changes as (headers, rows) of text, and which rows forget (shown as bad).

    "forgotten" is the verdict on the metric (yes when it got significantly worse beyond the tolerance, what
    makes the report say ``forgetting``); "examples lost" is, for 0/1 metrics, the share of the examples the
    base got right that the fine-tune gets wrong ("-" for other metrics, e.g. perplexity)."""
    rows: list[list[object]] = [
        [
            c["dataset"],
            c["metric"],
            num(c["base"], ".4g"),
            num(c["tuned"], ".4g"),
            num(c["relative_worsening"], "+.1%"),
            num(c["p_value"], ".2g"),
            c["test"],
            "yes" if c["forgets"] else "no",
            num(c["forgotten_share"], ".1%"),
        ]
        for c in changes
    ]
    return (list(FORGETTING_HEADERS), rows), [bool(c["forgets"]) for c in changes]


def comparison_rows(comparison: Any, *, candidate: str) -> tuple[Table, list[bool]]:
    """A comparison's rows as (headers, rows) of text, and which are regressions (shown as bad).

    ``candidate`` heads the candidate's column ("candidate" in the terminal, "this run" in its report).
    """
    headers = ["dataset", "metric", "baseline", candidate, "delta", "95% CI", "p", "test", "worse", "better"]
    rows: list[list[object]] = [
        [
            r.dataset,
            r.metric,
            num(r.baseline),
            num(r.candidate),
            num(r.delta, "+.4f"),
            ci(r.ci_low, r.ci_high, "+.4f"),
            num(r.p_value, ".3g"),
            r.test,
            str(len(r.worsened)),
            str(len(r.improved)),
            "-" if r.gate is None else "REGRESSION" if r.regression else "ok",
        ]
        for r in comparison.rows
    ]
    return ([*headers, "gate"], rows), [r.regression for r in comparison.rows]
