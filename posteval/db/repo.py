"""Repository functions: they flush, never commit; the caller's session_scope commits at the edge."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from posteval.db.models import (
    Checkpoint,
    Dataset,
    EvalRun,
    ExampleScore,
    ExampleStats,
    HealthReport,
    LossPoint,
    Metric,
    Prediction,
    RunDetail,
    Suite,
    utcnow,
)
from posteval.errors import RunTakenOver
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.results import MetricResult, RunDetailResult


def _get_or_create(session: Session, model: type[Any], lookup: Mapping[str, Any], **values: Any) -> Any:
    """The row matching ``lookup``, inserted with ``values`` if absent; safe against a concurrent insert."""
    row = session.scalars(select(model).filter_by(**lookup)).first()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = model(**lookup, **values)
            session.add(row)
    except IntegrityError:
        row = session.scalars(select(model).filter_by(**lookup)).one()
    return row


def upsert_checkpoint(session: Session, info: CheckpointInfo, base_id: int | None = None) -> Checkpoint:
    """The checkpoint row for ``info`` (by fingerprint); its path and name follow the latest sighting."""
    row: Checkpoint = _get_or_create(
        session,
        Checkpoint,
        {"fingerprint": info.fingerprint},
        path=info.location,
        model_name=info.model_name,
        training_step=info.training_step,
        is_adapter=info.is_adapter,
        base_checkpoint_id=base_id,
    )
    row.path = info.location
    if base_id is not None:
        row.base_checkpoint_id = base_id
    return row


def upsert_suite(session: Session, name: str, fingerprint: str, source_text: str) -> Suite:
    """The suite row for ``fingerprint``."""
    row: Suite = _get_or_create(
        session, Suite, {"fingerprint": fingerprint}, name=name, source_text=source_text
    )
    return row


def upsert_dataset(session: Session, name: str, fingerprint: str, row_count: int, path: str) -> Dataset:
    """The dataset row for (name, fingerprint)."""
    row: Dataset = _get_or_create(
        session, Dataset, {"name": name, "fingerprint": fingerprint}, row_count=row_count, path=path
    )
    return row


@dataclass(frozen=True)
class StoredOutput:
    """A stored model output: the text (None for scored text) and its extra values (loglikelihoods)."""

    output: str | None
    extra: dict[str, Any]


def _cache_filter(checkpoint_fp: str, dataset_fp: str, config_hash: str) -> Any:
    return (
        (Prediction.checkpoint_fingerprint == checkpoint_fp)
        & (Prediction.dataset_fingerprint == dataset_fp)
        & (Prediction.config_hash == config_hash)
    )


def cached_keys(session: Session, checkpoint_fp: str, dataset_fp: str, config_hash: str) -> set[str]:
    """Example keys already stored for one (checkpoint, dataset, config)."""
    query = select(Prediction.example_key).where(_cache_filter(checkpoint_fp, dataset_fp, config_hash))
    return set(session.scalars(query))


def cached_outputs(
    session: Session, checkpoint_fp: str, dataset_fp: str, config_hash: str
) -> dict[str, StoredOutput]:
    """Stored outputs for one (checkpoint, dataset, config), by example key (columns only, no ORM rows)."""
    query = select(Prediction.example_key, Prediction.output, Prediction.extra).where(
        _cache_filter(checkpoint_fp, dataset_fp, config_hash)
    )
    return {key: StoredOutput(output, extra or {}) for key, output, extra in session.execute(query)}


def add_predictions(
    session: Session,
    checkpoint_fp: str,
    dataset_fp: str,
    config_hash: str,
    items: Iterable[tuple[str, str | None, dict[str, Any]]],
) -> None:
    """Store (example key, output, extra) triples for one (checkpoint, dataset, config), in one statement."""
    rows = [
        {
            "checkpoint_fingerprint": checkpoint_fp,
            "dataset_fingerprint": dataset_fp,
            "config_hash": config_hash,
            "example_key": key,
            "output": output,
            "extra": extra,
            "created_at": utcnow(),
        }
        for key, output, extra in items
    ]
    if rows:
        # Two workers may compute the same outputs (a shared base model): the first stored wins.
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = session.get_bind().dialect.name
        if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - posteval supports these two
            session.execute(insert(Prediction), rows)
            return
        statement = (
            postgresql.insert(Prediction).on_conflict_do_nothing()
            if dialect == "postgresql"
            else sqlite.insert(Prediction).on_conflict_do_nothing()
        )
        session.execute(statement, rows)


def save_results(
    session: Session,
    run_id: str,
    dataset_id: int,
    keys: Sequence[str],
    results: Sequence[MetricResult],
) -> None:
    """Metrics of one dataset with their per-example scores and statistics (in ``keys`` order)."""
    for result in results:
        session.add(
            Metric(
                run_id=run_id,
                dataset_id=dataset_id,
                name=result.name,
                value=None if math.isnan(result.value) else result.value,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                n=result.n,
                higher_is_better=result.higher_is_better,
                signature=result.signature,
                details=result.details,
                aggregation=result.aggregation,
            )
        )
    session.flush()  # the metric rows first: every score references its metric
    for result in results:
        if result.stats is not None and len(result.stats) == len(keys):
            session.add_all(
                ExampleStats(
                    run_id=run_id, dataset_id=dataset_id, metric=result.name, example_key=key, stats=row
                )
                for key, row in zip(keys, result.stats, strict=True)
            )
        if result.per_example is not None and len(result.per_example) == len(keys):
            session.add_all(
                ExampleScore(
                    run_id=run_id,
                    dataset_id=dataset_id,
                    metric=result.name,
                    example_key=key,
                    value=None if math.isnan(v) else v,  # unjudged (an unparsed judge answer): no score
                )
                for key, v in zip(keys, result.per_example, strict=True)
            )
    session.flush()


def hold_for_persist(session: Session, run_id: str, claim_id: str | None) -> bool:
    """Lock the run for its final write; True to go on, False if it already succeeded under this claim
    (a retried persist whose first attempt committed). Raises RunTakenOver if the claim is lost."""
    run = session.get_one(EvalRun, run_id, with_for_update=True, populate_existing=True)
    if run.status == "succeeded" and claim_id is not None and run.claim_id == claim_id:
        return False
    if run.status != "running" or (claim_id is not None and run.claim_id != claim_id):
        raise RunTakenOver(
            f"run {run_id} is {run.status} and no longer held by this delivery; its outcome is left as is"
        )
    return True


def save_details(session: Session, run_id: str, dataset_id: int, details: Sequence[RunDetailResult]) -> None:
    """Reports of one dataset (confusion matrix, per-class table...) as the run's details."""
    session.add_all(
        RunDetail(
            run_id=run_id,
            dataset_id=dataset_id,
            name=detail.name,
            n=detail.n,
            signature=detail.signature,
            details=detail.details,
        )
        for detail in details
    )
    session.flush()


def mark_succeeded(session: Session, run_id: str, warnings: Sequence[str] = ()) -> None:
    """running -> succeeded (after :func:`hold_for_persist` checked the claim in the same transaction)."""
    run = session.get_one(EvalRun, run_id)
    run.status, run.finished_at, run.warnings = "succeeded", utcnow(), list(warnings)


def save_loss_points(session: Session, checkpoint_id: int, points: Iterable[tuple[int, str, float]]) -> int:
    """Store a checkpoint's (step, split, value) loss points once; returns how many were new."""
    rows = session.execute(
        select(LossPoint.split, LossPoint.step).where(LossPoint.checkpoint_id == checkpoint_id)
    )
    known = {(split, step) for split, step in rows}
    latest = {(split, step): value for step, split, value in points}  # a step logged twice: the last
    new = [
        LossPoint(checkpoint_id=checkpoint_id, step=step, split=split, value=value)
        for (split, step), value in latest.items()
        if (split, step) not in known
    ]
    session.add_all(new)
    session.flush()
    return len(new)


def save_health(
    session: Session, run_id: str, kind: str, verdict: str, reason: str, details: dict[str, Any]
) -> None:
    """Store (or replace) the run's ``kind`` health report."""
    session.execute(delete(HealthReport).where(HealthReport.run_id == run_id, HealthReport.kind == kind))
    session.add(HealthReport(run_id=run_id, kind=kind, verdict=verdict, reason=reason, details=details))
    session.flush()


def set_gate(session: Session, run_id: str, baseline_run_id: str | None, status: str, summary: str) -> None:
    """Record the run's baseline and regression-gate outcome."""
    run = session.get_one(EvalRun, run_id)
    run.baseline_run_id, run.gate_status, run.gate_summary = baseline_run_id, status, summary
