"""A model's lineage on one suite, and which checkpoint to ship.

The lineage is every succeeded run of the model on the suite in lineage order (posteval.db.lineage:
training step, then run time). The checkpoint to ship is the best on the suite's primary metric
(:func:`primary_metric`: ``primary:``, else the first gated metric, else the first task metric; from the
latest run's stored suite); ties go to the earlier checkpoint. Every other
checkpoint is compared with it through the comparison core (:func:`posteval.judging.compare.compare_runs`,
the paired test the gate uses), so a "best" that is no significantly better than its neighbours shows as
such. The test's level is the primary metric's gate ``alpha`` when it is gated, else 0.05.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import yaml

from posteval.db import queries, reads
from posteval.db.engine import session_scope
from posteval.db.lineage import lineage_key
from posteval.errors import InputError
from posteval.inputs.suite_schema import HEALTH_DATASETS
from posteval.judging.compare import compare_runs, stored_rules

DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class LineageRun:
    """One checkpoint of the lineage: its run, where it was evaluated, its gate, and its metric rows."""

    run_id: str
    step: int | None
    checkpoint: str
    created_at: datetime
    gate_status: str | None
    gate_summary: str | None
    metrics: pd.DataFrame  # posteval.db.queries.METRIC_COLUMNS

    def value(self, dataset: str, metric: str) -> float | None:
        """The run's value of ``dataset/metric`` (None when not stored or undefined)."""
        rows = self.metrics[(self.metrics["dataset"] == dataset) & (self.metrics["name"] == metric)]
        if rows.empty or pd.isna(rows["value"].iloc[0]):
            return None
        return float(rows["value"].iloc[0])


@dataclass(frozen=True)
class Versus:
    """A checkpoint against the one to ship, on the primary metric: candidate minus best."""

    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    significant: bool
    note: str = ""


@dataclass(frozen=True)
class ShipDecision:
    """The primary metric, why it is the primary, and the best checkpoint with every other one against it."""

    primary: str | None
    why: str
    higher_is_better: bool = True
    alpha: float = DEFAULT_ALPHA
    best_run_id: str | None = None
    versus: dict[str, Versus] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    """A model's succeeded runs on a suite, in lineage order, and the ship decision."""

    model: str
    suite: str
    runs: list[LineageRun]
    decision: ShipDecision


def primary_metric(source: str, stored: Sequence[tuple[str, str]]) -> tuple[str | None, str]:
    """The ``dataset/metric`` which checkpoint to ship is decided on, and why that one: the suite's
    ``primary:`` (validated when the suite was loaded), else its first gated metric, else its first task
    metric, else its first metric.

    ``source`` is the suite text a run stored and ``stored`` that run's (dataset, metric) rows in suite
    order. Read from the YAML and the rows, not by validating the suite again: that would load every metric
    family (scikit-learn among them), and the report is a read command. The task metrics are the metrics of
    the datasets that are not perplexity datasets (whose metrics measure general quality) or
    training_health's texts (the overfitting detector).
    """
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError:
        data = None
    data = data if isinstance(data, dict) else {}
    known = [f"{d}/{m}" for d, m in stored]
    if isinstance(data.get("primary"), str) and data["primary"] in known:
        return data["primary"], "the suite's primary"
    gated = [str(key) for key in (data.get("gates") or {}) if str(key) in known]
    if gated:
        return gated[0], "the suite's first gated metric (no primary: set)"
    datasets = data.get("datasets")
    datasets = datasets if isinstance(datasets, list) else []
    scored_text = {d.get("name") for d in datasets if isinstance(d, dict) and d.get("kind") == "perplexity"}
    task = [f"{d}/{m}" for d, m in stored if d not in scored_text and d not in HEALTH_DATASETS]
    if task:
        return task[0], "the suite's first task metric (no primary: or gates: set)"
    if known:
        return known[0], "the suite's first metric (no primary:, gates: or task metric)"
    return None, "the latest run stores no metric"


def load_lineage(model: str, suite: str, *, database_url: str | None = None) -> Lineage:
    """The lineage of ``model`` on the suite named ``suite`` and which checkpoint to ship."""
    with session_scope(database_url) as session:
        found = sorted(reads.succeeded_runs(session, model, suite), key=lambda r: lineage_key(r[2], r[3]))
        source = reads.suite_source(session, found[-1][0]) if found else None
    if not found:
        raise InputError(
            f"no succeeded run of model {model!r} on suite {suite!r} (`posteval runs list --model {model}` "
            "shows its runs and suites)"
        )
    runs = []
    for run_id, _, step, created in found:
        summary = queries.run_summary(run_id, database_url=database_url)
        runs.append(
            LineageRun(
                run_id,
                step,
                str(summary["checkpoint"]),
                created,
                summary["gate_status"],  # type: ignore[arg-type]
                summary["gate_summary"],  # type: ignore[arg-type]
                queries.run_metrics(run_id, database_url=database_url),
            )
        )
    decision = decide(runs, source or "", database_url=database_url)
    return Lineage(model, suite, runs, decision)


def decide(runs: list[LineageRun], source: str, *, database_url: str | None = None) -> ShipDecision:
    """The best run on the primary metric and every other run compared with it (paired test); ``source``
    is the suite text the latest run stored."""
    latest = runs[-1].metrics
    primary, why = primary_metric(source, list(zip(latest["dataset"], latest["name"], strict=True)))
    if primary is None:
        return ShipDecision(None, why)
    dataset, metric = primary.split("/", 1)
    with session_scope(database_url) as session:
        gate = stored_rules(session, runs[-1].run_id)[0].get(primary)
    alpha = gate.alpha if gate is not None else DEFAULT_ALPHA
    scored = [(r, r.value(dataset, metric)) for r in runs]
    valued = [(r, v) for r, v in scored if v is not None]
    if not valued:
        return ShipDecision(primary, why + "; no checkpoint has a value for it", alpha=alpha)
    rows = runs[-1].metrics
    higher = bool(rows[(rows["dataset"] == dataset) & (rows["name"] == metric)]["higher_is_better"].iloc[0])
    best = max(valued, key=lambda rv: rv[1] if higher else -rv[1])[0]  # max keeps the first of ties
    versus = {r.run_id: _against(best.run_id, r.run_id, dataset, metric, alpha, database_url) for r in runs}
    versus.pop(best.run_id)
    return ShipDecision(primary, why, higher, alpha, best.run_id, versus)


def _against(best: str, other: str, dataset: str, metric: str, alpha: float, url: str | None) -> Versus:
    try:
        rows = compare_runs(best, other, gates={}, only={(dataset, metric)}, database_url=url).rows
    except InputError as exc:
        return Versus(None, None, None, None, "none", False, f"not compared: {exc}")
    if not rows:
        return Versus(None, None, None, None, "none", False, "not compared: the metric is missing")
    row: Any = rows[0]
    significant = row.p_value is not None and row.p_value < alpha
    return Versus(row.delta, row.ci_low, row.ci_high, row.p_value, row.test, significant)
