"""LLM-judge metrics, computed from the verdicts the pipeline collected (posteval.judges): the mean rubric
score, the share of answers the judge's output never parsed for, and the win rate against the base model.

An unparsed answer is never scored: its per-example value is NaN (stored as no score), the metric's value
and CI come from the parsed examples, and it counts in ``judge_parse_failure_rate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from posteval.errors import MetricError
from posteval.evaluators.base import EvalInputs, register_metric
from posteval.evaluators.common import make_result
from posteval.judging.stats import mean_ci
from posteval.results import MetricResult

NAN = float("nan")
PAIR_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def _records(inputs: EvalInputs, kind: str, metric: str) -> Sequence[Mapping[str, Any]]:
    records = (inputs.judgments or {}).get(kind)
    if records is None:
        what = "a 'rubric'" if kind == "pointwise" else "'pairwise'"
        raise MetricError(f"metric {metric!r} needs the dataset's judge to have {what}")
    if len(records) != len(inputs.predictions):
        raise MetricError(
            f"metric {metric!r}: {len(records)} verdicts for {len(inputs.predictions)} examples"
        )
    return records


def _provenance(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Which judge and rubric gave the verdicts, and each example's raw answer and rationale."""
    first = records[0] if records else {}
    return {
        "judge": first.get("judge"),
        "rubric_hash": first.get("rubric_hash"),
        **({"against": first["against"]} if "against" in first else {}),
        "examples": [
            {
                "key": r.get("key"),
                "verdict": r.get("outcome", r.get("scores")),
                "rationale": r["rationales"],
                "raw": r["raw"],
                "error": r["error"],
            }
            for r in records
        ],
    }


def _judged_result(
    name: str,
    values: list[float],
    inputs: EvalInputs,
    *,
    higher_is_better: bool,
    options: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    details: dict[str, Any] | None = None,
) -> MetricResult:
    """Mean over the judged examples with a bootstrap CI of it; unjudged ones stay NaN per example."""
    judged = [v for v in values if not np.isnan(v)]
    value = float(np.mean(judged)) if judged else NAN
    first = records[0] if records else {}
    result = make_result(
        name,
        value,
        inputs,
        higher_is_better=higher_is_better,
        options=options,
        per_example=values,
        ci=mean_ci(judged, n_resamples=inputs.n_bootstrap, seed=inputs.seed),
        details={"judged": len(judged), **(details or {})},
    )
    signature = f"{result.signature}|judge:{first.get('judge')}|rubric:{str(first.get('rubric_hash'))[:16]}"
    return MetricResult(**{**result.__dict__, "signature": signature})


@register_metric("judge_score", higher_is_better=True, needs_references=False, needs_judgments=True)
def judge_score(inputs: EvalInputs, *, criterion: str | None = None) -> MetricResult:
    """The judge's rubric score per example (the mean over criteria, or one ``criterion``), averaged."""
    records = _records(inputs, "pointwise", "judge_score")
    values = []
    for record in records:
        scores = record["scores"]
        if scores is not None and criterion is not None and criterion not in scores:
            raise MetricError(f"judge_score: no criterion {criterion!r} in the rubric ({', '.join(scores)})")
        if scores is None:
            values.append(NAN)
        else:
            values.append(
                scores[criterion] if criterion is not None else float(np.mean(list(scores.values())))
            )
    return _judged_result(
        "judge_score",
        values,
        inputs,
        higher_is_better=True,
        options={"criterion": criterion},
        records=records,
        details={"provenance": _provenance(records)},
    )


@register_metric(
    "judge_parse_failure_rate", higher_is_better=False, needs_references=False, needs_judgments=True
)
def judge_parse_failure_rate(inputs: EvalInputs) -> MetricResult:
    """The share of examples whose judge answer (rubric or either pairwise order) did not parse."""
    kinds = [kind for kind in ("pointwise", "pairwise") if (inputs.judgments or {}).get(kind) is not None]
    if not kinds:
        raise MetricError("metric 'judge_parse_failure_rate' needs the dataset to have a judge")
    failed = np.zeros(len(inputs.predictions))
    for kind in kinds:
        records = _records(inputs, kind, "judge_parse_failure_rate")
        failed = np.maximum(failed, [1.0 if r["error"] is not None else 0.0 for r in records])
    values = [float(v) for v in failed]
    return make_result(
        "judge_parse_failure_rate",
        float(np.mean(values)) if values else NAN,
        inputs,
        higher_is_better=False,
        options={},
        per_example=values,
        ci=mean_ci(values, n_resamples=inputs.n_bootstrap, seed=inputs.seed),
    )


def _pairwise(inputs: EvalInputs, name: str, value_of: dict[str | None, float], higher: bool) -> MetricResult:
    records = _records(inputs, "pairwise", name)
    values = [value_of[r["outcome"]] if r["outcome"] is not None else NAN for r in records]
    return _judged_result(name, values, inputs, higher_is_better=higher, options={}, records=records)


@register_metric("win_rate", higher_is_better=True, needs_references=False, needs_judgments=True)
def win_rate(inputs: EvalInputs) -> MetricResult:
    """Wins against the compared answers, ties counting half; details hold the counts, the provenance and
    a two-sided sign test of wins against losses at 50% (scipy's binomtest; ties are not signs)."""
    from scipy.stats import binomtest

    records = _records(inputs, "pairwise", "win_rate")
    outcomes = [r["outcome"] for r in records]
    wins, ties, losses = (outcomes.count(o) for o in ("win", "tie", "loss"))
    p_value = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    values = [PAIR_VALUE[o] if o is not None else NAN for o in outcomes]
    details = {
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "unparsed": outcomes.count(None),
        "sign_test_p": p_value,
        "provenance": _provenance(records),
    }
    return _judged_result(
        "win_rate", values, inputs, higher_is_better=True, options={}, records=records, details=details
    )


@register_metric("tie_rate", higher_is_better=True, needs_references=False, needs_judgments=True)
def tie_rate(inputs: EvalInputs) -> MetricResult:
    """The share of judged pairs that tie (orders that disagree included)."""
    return _pairwise(inputs, "tie_rate", {"win": 0.0, "tie": 1.0, "loss": 0.0}, True)


@register_metric("loss_rate", higher_is_better=False, needs_references=False, needs_judgments=True)
def loss_rate(inputs: EvalInputs) -> MetricResult:
    """The share of judged pairs the evaluated answer loses."""
    return _pairwise(inputs, "loss_rate", {"win": 0.0, "tie": 0.0, "loss": 1.0}, False)


@register_metric(
    "judge_position_inconsistency", higher_is_better=False, needs_references=False, needs_judgments=True
)
def judge_position_inconsistency(inputs: EvalInputs) -> MetricResult:
    """The share of judged pairs whose two orders disagreed (position bias; counted as ties)."""
    records = _records(inputs, "pairwise", "judge_position_inconsistency")
    values = [NAN if r["inconsistent"] is None else float(r["inconsistent"]) for r in records]
    return _judged_result(
        "judge_position_inconsistency", values, inputs, higher_is_better=False, options={}, records=records
    )
