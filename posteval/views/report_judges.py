"""The report's judge section: every judged example's verdict with its provenance (judge, rubric hash),
its rationale and the judge's raw answer, folded so a reader opens the ones they want."""

from __future__ import annotations

import json
from typing import Any

from posteval.views.report_data import ReportRun
from posteval.views.report_html import Html, join, note, table, tag, text


def _opened(example: dict[str, Any]) -> Html:
    """The rationale, folded: open it to read it and the raw answer."""
    rationale = example.get("rationale")
    shown = json.dumps(rationale, ensure_ascii=False) if isinstance(rationale, (dict, list)) else rationale
    raw = example.get("raw")
    raw_text = "\n\n".join(raw) if isinstance(raw, list) else raw
    body = join(
        [
            tag("p", text(shown if shown is not None else f"unparsed: {example.get('error')}")),
            tag("p", join(["raw answer: ", text(raw_text)])),
        ]
    )
    return Html(f"<details><summary>rationale</summary>{body}</details>")


def _verdict(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
    return "unparsed" if value is None else str(value)


def judge_section(run: ReportRun) -> Html:
    """Per judged metric with provenance, one row per example: key, verdict, and the openable rationale."""
    parts: list[object] = []
    for dataset, metric, _, details in run.metrics:
        provenance = details.get("provenance") if isinstance(details, dict) else None
        if not isinstance(provenance, dict):
            continue
        parts.append(tag("h3", f"{dataset}: {metric}"))
        against = f", against {provenance['against']}" if "against" in provenance else ""
        rubric = str(provenance.get("rubric_hash"))[:16]
        parts.append(note(f"judge {provenance.get('judge')}, rubric {rubric}{against}"))
        rows = [
            (example.get("key"), _verdict(example.get("verdict")), _opened(example))
            for example in provenance.get("examples", [])
        ]
        parts.append(table(["key", "verdict", "rationale and raw answer"], rows))
    return join(parts) if parts else note("no LLM-judge metric in this run")
