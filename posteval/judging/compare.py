"""Comparing two runs metric by metric through the comparison core, and the regression gate.

Runs are compared only when their outputs are comparable: the same suite (by name), the same data (content
fingerprint of every shared dataset) and the same stored output settings (runner, dtype, context cap,
generation options, templates, label set... see ``pipeline.output_settings``) for every shared dataset;
otherwise the comparison is refused naming the first differing setting. Batch size, gates, tolerances and
paths are not output settings and never block a comparison; a different seed or bootstrap size is noted.

Each shared metric goes through :func:`posteval.judging.paired.compare_samples` on the stored per-example
scores and sufficient statistics: McNemar or a sign-flip permutation test for means of per-example scores, a
paired bootstrap of the statistic itself for corpus metrics (macro F1, BLEU, chrF, perplexity). The delta
is candidate minus baseline. A gated metric regresses when it dropped (in its own worse direction) by more
than ``max_drop`` and the test's p-value is below the gate's ``alpha``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import pydantic
import yaml

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.errors import InputError
from posteval.inputs.suite import Gate
from posteval.judging.paired import MetricSample, compare_samples
from posteval.judging.stats import DEFAULT_RESAMPLES
from posteval.numbers import num


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
    notes: list[str] = field(default_factory=list)  # differences that do not block (seed, bootstrap size)

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
        """One line: how many metrics were compared and which gated ones regressed (and any notes)."""
        notes = "".join(f"; note: {note}" for note in self.notes)
        if not self.regressions:
            gated = sum(row.gate is not None for row in self.rows)
            return f"no regression: {len(self.rows)} metrics compared, {gated} gated" + notes
        parts = [
            f"{r.dataset}/{r.metric} dropped {fmt(r.drop, '.4g')} "
            f"(> {r.gate['max_drop'] if r.gate else 0}, p={fmt(r.p_value, '.2g')}, {r.test})"
            for r in self.regressions
        ]
        return "regression: " + "; ".join(parts) + notes


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``n/a`` where it is missing or undefined (gate messages)."""
    return num(value, spec, missing="n/a")


@dataclass(frozen=True)
class _RunMetrics:
    suite: str
    status: str
    values: dict[tuple[str, str], tuple[float | None, bool, dict[str, Any] | None]]
    fingerprints: dict[str, str]
    settings: dict[str, Any] | None
    tokenization: dict[str, str | None]  # per dataset: the signature's tokens: field, None before it existed


def _load(session: Any, run_id: str) -> _RunMetrics:
    found = reads.run_row(session, run_id)
    rows = reads.metric_rows(session, run_id)
    return _RunMetrics(
        suite=found.suite,
        status=found.status,
        values={(d.name, m.name): (m.value, m.higher_is_better, m.aggregation) for d, m in rows},
        fingerprints={d.name: d.fingerprint for d, _ in rows},
        settings=found.output_settings,
        tokenization={d.name: _tokens_field(m.signature) for d, m in rows},
    )


def _tokens_field(signature: str) -> str | None:
    """The tokenization policy a metric row was computed under (its signature's ``tokens:`` field)."""
    return next((part for part in signature.split("|") if part.startswith("tokens:")), None)


def _sample(session: Any, run_id: str, dataset: str, metric: str, stored: tuple[Any, ...]) -> MetricSample:
    """One run's stored value, per-example scores and statistics of one metric."""
    value, higher_is_better, aggregation = stored
    scores = reads.example_scores(session, run_id, dataset=dataset, metric=metric)
    stats = reads.example_stats(session, run_id, dataset, metric) if aggregation is not None else []
    return MetricSample(
        value, higher_is_better, {k: v for _, _, k, v in scores}, {k: list(v) for k, v in stats}, aggregation
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat |= _flatten(inner, f"{prefix}{key}.")
        return flat
    return {prefix.rstrip("."): value}


def _setting_differences(before: dict[str, Any], after: dict[str, Any], datasets: set[str]) -> list[str]:
    """Output settings that differ for the datasets both runs evaluated, each as ``dataset: key a -> b``."""
    differences = []
    old, new = before.get("datasets") or {}, after.get("datasets") or {}
    for name in sorted(datasets & set(old) & set(new)):
        a = _flatten({k: v for k, v in old[name].items() if k != "config_hash"})
        b = _flatten({k: v for k, v in new[name].items() if k != "config_hash"})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                label = key.split(".", 1)[-1]
                differences.append(f"dataset {name!r} {label} {a.get(key)!r} -> {b.get(key)!r}")
    return differences


def _notes(before: dict[str, Any] | None, after: dict[str, Any] | None, ids: tuple[str, str]) -> list[str]:
    """Differences that cannot change an output but change the statistics (seed, bootstrap size)."""
    if before is None or after is None:
        missing = ids[0] if before is None else ids[1]
        return [f"run {missing[:12]} has no stored output settings (evaluated before they were recorded)"]
    old, new = before.get("statistics") or {}, after.get("statistics") or {}
    return [
        f"{key} {old.get(key)} -> {new.get(key)}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def check_comparable(baseline: _RunMetrics, candidate: _RunMetrics, ids: tuple[str, str]) -> list[str]:
    """Refuse runs of different suites, data or output settings, naming what differs; returns the notes."""
    if baseline.suite != candidate.suite:
        raise InputError(
            f"runs {ids[0][:12]} and {ids[1][:12]} are of different suites "
            f"({baseline.suite!r} and {candidate.suite!r}); compare runs of one suite"
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
    shared = set(baseline.fingerprints) & set(candidate.fingerprints)
    differing = [
        f"{name} ({baseline.fingerprints[name][:12]} vs {candidate.fingerprints[name][:12]})"
        for name in sorted(shared)
        if baseline.fingerprints[name] != candidate.fingerprints[name]
    ]
    if differing:
        raise InputError(
            f"runs {ids[0][:12]} and {ids[1][:12]} evaluated different data: dataset fingerprints differ for "
            + ", ".join(differing)
        )
    if baseline.settings is not None and candidate.settings is not None:
        changed = _setting_differences(baseline.settings, candidate.settings, shared)
        if changed:
            raise InputError(
                f"runs {ids[0][:12]} and {ids[1][:12]} used different output settings: "
                + "; ".join(changed)
                + " (a difference the checkpoints did not cause;"
                " evaluate the baseline with the same settings)"
            )
    return _notes(baseline.settings, candidate.settings, ids)


def _compare_metric(
    session: Any,
    ids: tuple[str, str],
    dataset: str,
    metric: str,
    stored: tuple[tuple[Any, ...], tuple[Any, ...]],
    gate: Gate | None,
    seed: int,
    n_resamples: int,
) -> MetricComparison:
    before = _sample(session, ids[0], dataset, metric, stored[0])
    after = _sample(session, ids[1], dataset, metric, stored[1])
    core = compare_samples(before, after, n_resamples=n_resamples, seed=seed)
    row = MetricComparison(
        dataset,
        metric,
        after.higher_is_better,
        before.value,
        after.value,
        core.delta,
        core.ci_low,
        core.ci_high,
        core.p_value,
        core.test,
        core.n,
        core.improved,
        core.worsened,
        None if gate is None else gate.model_dump(),
    )
    if gate is None or row.drop is None or core.p_value is None:
        return row
    return MetricComparison(
        **{**asdict(row), "regression": row.drop > gate.max_drop and core.p_value < gate.alpha}
    )


def stored_rules(session: Any, run_id: str) -> tuple[dict[str, Gate], int, int]:
    """The gates, seed and bootstrap size of the suite the run ``run_id`` stored, as its gate applied them
    (defaults where the stored text no longer reads as YAML or a value does not validate)."""
    try:
        data = yaml.safe_load(reads.suite_source(session, run_id) or "")
    except yaml.YAMLError:
        data = None
    data = data if isinstance(data, dict) else {}
    gates: dict[str, Gate] = {}
    for key, value in (data.get("gates") or {}).items():
        try:
            gates[str(key)] = Gate.model_validate(value or {})
        except pydantic.ValidationError:
            continue
    seed, resamples = data.get("seed", 0), data.get("bootstrap_resamples", DEFAULT_RESAMPLES)
    return (
        gates,
        seed if isinstance(seed, int) else 0,
        resamples if isinstance(resamples, int) and resamples >= 0 else DEFAULT_RESAMPLES,
    )


def compare_runs(
    baseline_run_id: str,
    candidate_run_id: str,
    *,
    gates: Mapping[str, Gate] | None = None,
    seed: int | None = None,
    n_resamples: int | None = None,
    only: Collection[tuple[str, str]] | None = None,
    database_url: str | None = None,
) -> Comparison:
    """Compare every metric the two runs share (ids or unique prefixes, as the CLI takes), or only the
    (dataset, metric) pairs in ``only``.

    ``gates`` maps ``dataset/metric`` to its gate; without it (and without ``seed`` or ``n_resamples``)
    the candidate's stored suite decides, as its regression gate did, so a gated metric shows its verdict.
    """
    with session_scope(database_url) as session:
        ids = (reads.full_run_id(session, baseline_run_id), reads.full_run_id(session, candidate_run_id))
        stored = stored_rules(session, ids[1])
        gates = stored[0] if gates is None else gates
        seed = stored[1] if seed is None else seed
        n_resamples = stored[2] if n_resamples is None else n_resamples
        baseline, candidate = _load(session, ids[0]), _load(session, ids[1])
        notes = check_comparable(baseline, candidate, ids)
        rows = [
            _compare_metric(
                session,
                ids,
                dataset,
                metric,
                (baseline.values[(dataset, metric)], stored),
                gates.get(f"{dataset}/{metric}"),
                seed,
                n_resamples,
            )
            for (dataset, metric), stored in candidate.values.items()
            if (dataset, metric) in baseline.values and (only is None or (dataset, metric) in only)
        ]
    return Comparison(ids[0], ids[1], rows, notes)
