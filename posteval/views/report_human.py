"""The report's human evaluation section: each human metric with its raters' own values and their
agreement, and where a judge scored the same items, Cohen's kappa of judge against humans (quadratic
weights on the rubric's scale; unweighted on win/tie/loss) with a bootstrap CI and the items where they
disagree most."""

from __future__ import annotations

from typing import Any, Literal

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.human.agreement import cohen_kappa, largest_disagreements
from posteval.human.blind import stored_rubric
from posteval.numbers import ci, num
from posteval.views.report_data import ReportRun
from posteval.views.report_html import Html, join, note, table, tag, text

DISAGREEMENTS = 10  # items shown per dataset where judge and humans differ most
# human metric -> the judge metric scored on the same items, and how kappa weighs a disagreement
JUDGE_OF: dict[str, tuple[str, Literal["quadratic"] | None]] = {
    "human_score": ("judge_score", "quadratic"),
    "human_win_rate": ("win_rate", None),
}
OUTCOMES = [0.0, 0.5, 1.0]  # loss, tie, win


def _scores(run: ReportRun, dataset: str, metric: str) -> dict[str, float]:
    with session_scope(run.url) as session:
        rows = reads.example_scores(session, run.id, dataset=dataset, metric=metric)
    return {key: value for _, _, key, value in rows if value is not None}


def _raters(details: dict[str, Any]) -> Html:
    raters: dict[str, dict[str, Any]] = details.get("raters") or {}
    rows = [(name, num(entry["value"]), entry["n"]) for name, entry in raters.items()]
    alpha = details.get("krippendorff_alpha")
    agreement = note(
        f"raters' agreement: Krippendorff's alpha (ordinal) {num(alpha)}"
        if alpha is not None
        else "raters' agreement: needs two raters on the same items"
    )
    return join([table(["rater", "value", "items"], rows), agreement])


def _judge_agreement(run: ReportRun, dataset: str, metric: str) -> list[object]:
    judge_metric, weights = JUDGE_OF[metric]
    judge, human = _scores(run, dataset, judge_metric), _scores(run, dataset, metric)
    keys = sorted(set(judge) & set(human))
    if not keys:
        return [note(f"no {judge_metric} on the items humans labelled: no judge-human agreement")]
    scale = stored_rubric(run.id, dataset, run.url).scale if metric == "human_score" else OUTCOMES
    judged, labelled = [judge[k] for k in keys], [human[k] for k in keys]
    kappa = cohen_kappa(judged, labelled, scale=scale, weights=weights)
    outputs, _ = run.outputs(dataset)
    examples, _ = run.examples(dataset)
    worst = largest_disagreements(keys, judged, labelled, top=DISAGREEMENTS)
    rows = [
        (k, num(j, ".4g"), num(h, ".4g"), text(examples.get(k, (None,))[0]), text(outputs.get(k)))
        for k, j, h in worst
    ]
    kind = "quadratic-weighted" if weights else "unweighted"
    return [
        tag(
            "p",
            f"judge ({judge_metric}) against humans ({metric}): Cohen's kappa ({kind}) "
            f"{num(kappa.value)} {ci(kappa.ci_low, kappa.ci_high)} on {kappa.n} items",
        ),
        table(["key", judge_metric, metric, "input", "output"], rows) if rows else note("no disagreements"),
    ]


def human_section(run: ReportRun) -> Html:
    """Every human metric of the run, its raters and, with a judge on the same items, their agreement."""
    parts: list[object] = []
    for dataset, metric, _, details in run.metrics:
        if metric not in JUDGE_OF:
            continue
        parts.append(tag("h3", f"{dataset}: {metric}"))
        parts.append(_raters(details))
        parts += _judge_agreement(run, dataset, metric)
    return join(parts) if parts else note("no human labels for this run (posteval human export / import)")
