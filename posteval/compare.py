"""Comparing two runs metric by metric, with paired tests on per-example scores, and the regression gate.

Both runs must come from the same suite (by name), with the same settings for every dataset they share
(prompt, labels, scoring, generation options...; gates and tolerances may differ), and every shared
dataset must have the same content fingerprint; otherwise the comparison is refused with what differs.

For each metric the delta is candidate minus baseline. Where the metric is the mean of its per-example
scores (accuracy, exact match, ROUGE), the delta's CI is a paired bootstrap and the p-value an exact
McNemar test (0/1 scores) or a sign-flip permutation test. Corpus metrics (macro F1, BLEU, perplexity)
are not tested on per-example scores, which would test another quantity: they count as significant
when the candidate's own 95% CI lies wholly on the worse side of the baseline value (``ci_exclusion``).
A gated metric regresses when it dropped (in its own worse direction) by more than ``max_drop`` and
that test is significant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import yaml
from sqlalchemy import select

from posteval.db.engine import session_scope
from posteval.db.models import Dataset, EvalRun, ExampleScore, Metric, Suite
from posteval.errors import InputError
from posteval.stats import DEFAULT_RESAMPLES, decomposes, paired_compare, worse_beyond_ci
from posteval.suite import Gate

MAX_FLIPS = 50  # flipped example keys kept per direction and metric


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one dataset, baseline against candidate."""

    dataset: str
    metric: str
    higher_is_better: bool
    baseline: float | None
    candidate: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    n: int
    improved: list[str] = field(default_factory=list)  # keys wrong in the baseline, right now
    worsened: list[str] = field(default_factory=list)  # keys right in the baseline, wrong now
    gate: dict[str, float] | None = None
    regression: bool = False

    @property
    def drop(self) -> float | None:
        """How much worse the candidate is, in the metric's units (negative when it is better)."""
        if self.delta is None:
            return None
        return -self.delta if self.higher_is_better else self.delta


@dataclass(frozen=True)
class Comparison:
    """Every shared metric of two runs, and which gated metrics regressed."""

    baseline_run_id: str
    candidate_run_id: str
    rows: list[MetricComparison]

    @property
    def regressions(self) -> list[MetricComparison]:
        """The gated metrics that regressed."""
        return [row for row in self.rows if row.regression]

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: dataset, metric, baseline, candidate, delta, CI, p, test, flips, gate."""
        records = []
        for row in self.rows:
            record = asdict(row)
            record["improved"] = len(row.improved)
            record["worsened"] = len(row.worsened)
            record["gate"] = (
                None if row.gate is None else f"max_drop {row.gate['max_drop']}, alpha {row.gate['alpha']}"
            )
            records.append(record)
        columns = list(MetricComparison.__dataclass_fields__)
        return pd.DataFrame(records, columns=columns)

    def summary(self) -> str:
        """One line: how many metrics were compared and which gated ones regressed."""
        if not self.regressions:
            gated = sum(row.gate is not None for row in self.rows)
            return f"no regression: {len(self.rows)} metrics compared, {gated} gated"
        parts = [
            f"{r.dataset}/{r.metric} dropped {r.drop:.4g} "
            f"(> {r.gate['max_drop'] if r.gate else 0}, p={r.p_value:.2g})"
            for r in self.regressions
        ]
        return "regression: " + "; ".join(parts)


@dataclass(frozen=True)
class _RunMetrics:
    suite: str
    suite_text: str
    status: str
    values: dict[tuple[str, str], tuple[float | None, bool, float | None, float | None]]
    fingerprints: dict[str, str]
    tokenization: dict[str, str | None]  # per dataset: the signature's tokens: field, None before it existed


def _load(session: Any, run_id: str) -> _RunMetrics:
    found = session.execute(
        select(EvalRun.status, Suite.name, Suite.source_text)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .where(EvalRun.id == run_id)
    ).first()
    if found is None:
        raise InputError(f"no run with id {run_id!r}")
    rows = session.execute(
        select(
            Dataset.name,
            Dataset.fingerprint,
            Metric.name,
            Metric.value,
            Metric.higher_is_better,
            Metric.ci_low,
            Metric.ci_high,
            Metric.signature,
        )
        .join(Dataset, Metric.dataset_id == Dataset.id)
        .where(Metric.run_id == run_id)
    ).all()
    return _RunMetrics(
        suite=found.name,
        suite_text=found.source_text,
        status=found.status,
        values={(r[0], r[2]): (r[3], r[4], r[5], r[6]) for r in rows},
        fingerprints={r[0]: r[1] for r in rows},
        tokenization={r[0]: _tokens_field(r[7]) for r in rows},
    )


def _tokens_field(signature: str) -> str | None:
    """The tokenization policy a metric row was computed under (its signature's ``tokens:`` field)."""
    return next((part for part in signature.split("|") if part.startswith("tokens:")), None)


def _scores(session: Any, run_id: str, metric: str, dataset: str) -> dict[str, float | None]:
    rows = session.execute(
        select(ExampleScore.example_key, ExampleScore.value)
        .join(Dataset, ExampleScore.dataset_id == Dataset.id)
        .where(ExampleScore.run_id == run_id, ExampleScore.metric == metric, Dataset.name == dataset)
    ).all()
    return {key: value for key, value in rows}


# What decides model outputs or how they are scored; gates, tolerances and paths do not.
_DATASET_SETTINGS = (
    "kind",
    "prompt",
    "reference",
    "labels",
    "scoring",
    "text",
    "target_delimiter",
    "stride",
    "key",
    "split",
    "limit",
)


def _changed_settings(before: str, after: str) -> list[str]:
    """The settings that differ between two versions of a suite, for the datasets both have."""
    if before == after:
        return []
    old, new = yaml.safe_load(before) or {}, yaml.safe_load(after) or {}
    changed = []
    if (old.get("generation") or {}) != (new.get("generation") or {}):
        changed.append(f"generation {old.get('generation')} -> {new.get('generation')}")
    old_sets = {d.get("name"): d for d in old.get("datasets") or [] if isinstance(d, dict)}
    for dataset in new.get("datasets") or []:
        if not isinstance(dataset, dict) or dataset.get("name") not in old_sets:
            continue
        previous = old_sets[dataset["name"]]
        fields = [f for f in _DATASET_SETTINGS if previous.get(f) != dataset.get(f)]
        if fields:
            changed.append(f"dataset {dataset['name']!r} changed {', '.join(fields)}")
    return changed


def check_comparable(baseline: _RunMetrics, candidate: _RunMetrics, ids: tuple[str, str]) -> None:
    """Refuse runs of different suites, or shared datasets whose content differs, naming what differs."""
    if baseline.suite != candidate.suite:
        raise InputError(
            f"runs {ids[0][:12]} and {ids[1][:12]} are of different suites "
            f"({baseline.suite!r} and {candidate.suite!r}); compare runs of one suite"
        )
    changed = _changed_settings(baseline.suite_text, candidate.suite_text)
    if changed:
        raise InputError(
            f"runs {ids[0][:12]} and {ids[1][:12]} used different settings of suite {baseline.suite!r}: "
            + "; ".join(changed)
            + " (a difference the checkpoints did not cause; evaluate the baseline with this suite)"
        )
    policies = [
        f"{name} ({baseline.tokenization[name] or 'none recorded'} vs {candidate.tokenization[name]})"
        for name in sorted(set(baseline.tokenization) & set(candidate.tokenization))
        if baseline.tokenization[name] != candidate.tokenization[name]
    ]
    if policies:
        raise InputError(
            f"runs {ids[0][:12]} and {ids[1][:12]} used different tokenization policies (what the model "
            "is conditioned on) for " + ", ".join(policies) + "; evaluate the baseline once more with "
            "this version and suite"
        )
    differing = [
        f"{name} ({baseline.fingerprints[name][:12]} vs {candidate.fingerprints[name][:12]})"
        for name in sorted(set(baseline.fingerprints) & set(candidate.fingerprints))
        if baseline.fingerprints[name] != candidate.fingerprints[name]
    ]
    if differing:
        raise InputError(
            f"runs {ids[0][:12]} and {ids[1][:12]} evaluated different data: dataset fingerprints differ for "
            + ", ".join(differing)
        )


def _compare_metric(
    session: Any,
    ids: tuple[str, str],
    dataset: str,
    metric: str,
    values: tuple[Any, Any],
    hib: bool,
    gate: Gate | None,
    seed: int,
    n_resamples: int,
    candidate_ci: tuple[float | None, float | None] = (None, None),
) -> MetricComparison:
    base_value, cand_value = values
    delta = None if base_value is None or cand_value is None else cand_value - base_value
    stored = _scores(session, ids[0], metric, dataset), _scores(session, ids[1], metric, dataset)
    keys = sorted(k for k in set(stored[0]) & set(stored[1]) if None not in (stored[0][k], stored[1][k]))
    before = {k: float(stored[0][k] or 0.0) for k in keys}
    after = {k: float(stored[1][k] or 0.0) for k in keys}
    ci_low = ci_high = p_value = None
    test, improved, worsened = "none", [], []
    # A paired test on per-example scores tests the metric only where the metric is their mean, over
    # the same examples in both runs; corpus metrics fall back to the candidate's own CI.
    paired_ok = (
        bool(keys)
        and len(keys) == len(stored[0]) == len(stored[1])
        and decomposes(base_value, list(before.values()))
        and decomposes(cand_value, list(after.values()))
    )
    if not paired_ok and base_value is not None:
        test = "ci_exclusion"
        significant = worse_beyond_ci(base_value, *candidate_ci, higher_is_better=hib)
    if paired_ok:
        paired = paired_compare(
            [before[k] for k in keys],
            [after[k] for k in keys],
            n_resamples=n_resamples,
            seed=seed,
        )
        ci_low, ci_high, p_value, test = paired.ci_low, paired.ci_high, paired.p_value, paired.test
        if paired.lost is not None:  # 0/1 scores: the flipped examples in both directions
            good, bad = (1.0, 0.0) if hib else (0.0, 1.0)
            improved = [k for k in keys if before[k] == bad and after[k] == good][:MAX_FLIPS]
            worsened = [k for k in keys if before[k] == good and after[k] == bad][:MAX_FLIPS]
    row = MetricComparison(
        dataset,
        metric,
        hib,
        base_value,
        cand_value,
        delta,
        ci_low,
        ci_high,
        p_value,
        test,
        len(keys),
        improved,
        worsened,
        None if gate is None else gate.model_dump(),
    )
    if gate is not None and row.drop is not None and not math.isnan(row.drop):
        if paired_ok:
            significant = p_value is not None and p_value < gate.alpha
        elif base_value is None:
            significant = False
        return MetricComparison(**{**asdict(row), "regression": row.drop > gate.max_drop and significant})
    return row


def compare_runs(
    baseline_run_id: str,
    candidate_run_id: str,
    *,
    gates: Mapping[str, Gate] | None = None,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    database_url: str | None = None,
) -> Comparison:
    """Compare every metric the two runs share; ``gates`` maps ``dataset/metric`` to its gate."""
    ids = (baseline_run_id, candidate_run_id)
    gates = gates or {}
    with session_scope(database_url) as session:
        baseline, candidate = _load(session, ids[0]), _load(session, ids[1])
        check_comparable(baseline, candidate, ids)
        rows = [
            _compare_metric(
                session,
                ids,
                dataset,
                metric,
                (baseline.values[(dataset, metric)][0], value),
                hib,
                gates.get(f"{dataset}/{metric}"),
                seed,
                n_resamples,
                (ci_low, ci_high),
            )
            for (dataset, metric), (value, hib, ci_low, ci_high) in candidate.values.items()
            if (dataset, metric) in baseline.values
        ]
    return Comparison(baseline_run_id, candidate_run_id, rows)
