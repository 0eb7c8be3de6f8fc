"""SQLAlchemy 2 typed models: every run, metric, prediction and per-example score is a row.

Relationships are ``lazy="raise"``: related rows are loaded on purpose (selectinload, joins), never by
accident inside a loop.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from posteval.db.types import SafeText

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("pending", "running", "succeeded", "failed")
GATE_STATUSES = ("passed", "failed", "no_baseline", "incomparable")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that ``column`` holds one of ``values`` (NULL passes, as SQL's CHECK has it)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the models use."""
    return datetime.now(UTC)


def new_run_id() -> str:
    """A run id: 32 hex characters, unique across databases and workers."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints predictably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CreatedAt:
    """Mixin: the row's creation time."""

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Checkpoint(CreatedAt, Base):
    """A model checkpoint, identified by the content fingerprint of its files."""

    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(String(255), index=True)  # the name it was first seen under
    base_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    training_step: Mapped[int | None] = mapped_column(Integer)
    is_adapter: Mapped[bool] = mapped_column(Boolean, default=False)

    base: Mapped[Checkpoint | None] = relationship(remote_side=[id], lazy="raise")


class Suite(CreatedAt, Base):
    """A suite file as evaluated: its name, content fingerprint and source text."""

    __tablename__ = "suites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    source_text: Mapped[str] = mapped_column(Text)


class Dataset(CreatedAt, Base):
    """A held-out set as loaded: name, content fingerprint and row count."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    row_count: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)


class EvalRun(CreatedAt, Base):
    """One evaluation of a checkpoint with a suite; status moves pending -> running -> succeeded|failed."""

    __tablename__ = "eval_runs"
    __table_args__ = (
        Index("ix_eval_runs_created_at", "created_at"),
        CheckConstraint(_one_of("status", RUN_STATUSES), name="status"),
        CheckConstraint(_one_of("gate_status", GATE_STATUSES), name="gate_status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("suites.id"), index=True)
    # The model (lineage) this run counts for: from the trigger, or the checkpoint folder's name. It lives
    # on the run, not the checkpoint, so one checkpoint evaluated under two names never moves lineage.
    model_name: Mapped[str] = mapped_column(String(255), index=True, default="")
    # Where the checkpoint was and its training step when this run evaluated it. The checkpoint row is
    # keyed by content and its path follows the latest sighting; the run keeps its own (NULL only in rows
    # written without them, which read the checkpoint's: queries coalesce).
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    training_step: Mapped[int | None] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(SafeText)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    baseline_run_id: Mapped[str | None] = mapped_column(String(32))
    gate_status: Mapped[str | None] = mapped_column(String(16))  # passed, failed, no_baseline
    gate_summary: Mapped[str | None] = mapped_column(Text)
    # The lease: whoever claimed the run (a fresh token per claim) and when it last said it is alive. A
    # running run whose heartbeat is older than the lease is taken over by the next delivery.
    claim_id: Mapped[str | None] = mapped_column(String(32))
    claimed_by: Mapped[str | None] = mapped_column(String(255))  # host/pid namespace:pid of the claimer
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What decides the run's outputs and statistics: per dataset, its output settings (runner, dtype,
    # context cap, generation options, templates...) and their config hash, plus the run's seed and
    # bootstrap size; config_hash covers all of it. Runs are comparable only when their outputs were.
    output_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    config_hash: Mapped[str | None] = mapped_column(String(64))

    checkpoint: Mapped[Checkpoint] = relationship(lazy="raise")
    suite: Mapped[Suite] = relationship(lazy="raise")


class Metric(Base):
    """One metric's value on one dataset in one run, with its CI and the signature that explains it."""

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("run_id", "dataset_id", "name"),
        Index("ix_metrics_name_run", "name", "run_id"),  # history of one metric across runs
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Float)  # None where undefined (NaN), e.g. no tokens
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    signature: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # None: the value is the mean of the per-example scores; else the registered aggregator
    # ({"fn": name, **params}) that maps summed per-example statistics (example_stats) to the value.
    aggregation: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    dataset: Mapped[Dataset] = relationship(lazy="raise")


class RunDetail(Base):
    """A report of one dataset in a run (confusion matrix, per-class table, classification report):
    explained by its signature, shown with the run, never compared or gated like a metric."""

    __tablename__ = "run_details"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    name: Mapped[str] = mapped_column(String(255))
    n: Mapped[int] = mapped_column(Integer)
    signature: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set only by migration 0006: the metric row (value, CI, per-example scores) this report was stored
    # as before, so a downgrade restores it exactly.
    from_metric: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    dataset: Mapped[Dataset] = relationship(lazy="raise")


class Prediction(CreatedAt, Base):
    """A model output for one example: the cache of model work, keyed by content fingerprints."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint(
            "checkpoint_fingerprint",
            "dataset_fingerprint",
            "config_hash",
            "example_key",
            name="uq_predictions_cache_key",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checkpoint_fingerprint: Mapped[str] = mapped_column(String(64))
    dataset_fingerprint: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    example_key: Mapped[str] = mapped_column(String(255))
    output: Mapped[str | None] = mapped_column(SafeText)  # model output: arbitrary text, NUL included
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ExampleScore(Base):
    """One metric's score on one example in one run: the input of paired tests and flip lists."""

    __tablename__ = "example_scores"
    __table_args__ = (
        UniqueConstraint("run_id", "dataset_id", "metric", "example_key"),
        Index("ix_example_scores_run_metric", "run_id", "metric"),
        # A score belongs to its metric row: removing the metric removes its scores.
        ForeignKeyConstraint(
            ["run_id", "dataset_id", "metric"],
            ["metrics.run_id", "metrics.dataset_id", "metrics.name"],
            name="fk_example_scores_metric_metrics",
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    metric: Mapped[str] = mapped_column(String(255))
    example_key: Mapped[str] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Float)  # None where undefined (NaN)
    # What happened on the example beyond its score (a code problem's executions: status, exception type,
    # the failing test's line, output), shown in the report; None for most metrics (migration 0009).
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class HumanLabel(CreatedAt, Base):
    """One rater's label of one example of a run, imported from a blinded export (posteval.human): a score
    on one rubric criterion (kind "score"), or the run's outcome against ``base_run_id`` (kind "pair": 1
    win, 0.5 tie, 0 loss), already un-blinded."""

    __tablename__ = "human_labels"
    __table_args__ = (
        UniqueConstraint(
            "run_id", "dataset_id", "kind", "example_key", "rater", "criterion", name="uq_human_labels_label"
        ),
        Index("ix_human_labels_run_kind", "run_id", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    kind: Mapped[str] = mapped_column(String(8))  # "score" or "pair" (posteval.human checks on import)
    example_key: Mapped[str] = mapped_column(String(255))
    rater: Mapped[str] = mapped_column(String(255))
    criterion: Mapped[str] = mapped_column(String(255), default="")  # "" for a pair
    value: Mapped[float] = mapped_column(Float)
    base_run_id: Mapped[str | None] = mapped_column(String(32))
    export_id: Mapped[str] = mapped_column(String(32))


class ExampleStats(Base):
    """A corpus metric's sufficient statistics on one example in one run (F1: per-class tp/fp/fn; BLEU:
    n-gram counts and lengths; perplexity: log-likelihood and units): the input of its paired bootstrap."""

    __tablename__ = "example_stats"
    __table_args__ = (
        UniqueConstraint("run_id", "dataset_id", "metric", "example_key"),
        Index("ix_example_stats_run_metric", "run_id", "metric"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    metric: Mapped[str] = mapped_column(String(255))
    example_key: Mapped[str] = mapped_column(String(255))
    stats: Mapped[list[float]] = mapped_column(JSON)


class LossPoint(Base):
    """One logged loss of a checkpoint's training: step, split (train or eval), value."""

    __tablename__ = "loss_points"
    __table_args__ = (UniqueConstraint("checkpoint_id", "split", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)


class HealthReport(Base):
    """A run's training-health finding: the overfitting or the forgetting verdict, with its evidence."""

    __tablename__ = "health_reports"
    __table_args__ = (UniqueConstraint("run_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "overfitting" or "forgetting"
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Baseline(CreatedAt, Base):
    """A pinned baseline for a model and suite: a run, or a checkpoint (its latest run of the suite)."""

    __tablename__ = "baselines"
    __table_args__ = (
        UniqueConstraint("model_name", "suite_name"),
        CheckConstraint("(run_id IS NULL) <> (checkpoint_id IS NULL)", name="run_or_checkpoint"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255))
    suite_name: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))


class TriggerFailure(CreatedAt, Base):
    """A triggered flow run that failed before any run row could point at it (no suite or checkpoint
    could be resolved): what it was given, why it failed, and its Prefect flow run."""

    __tablename__ = "trigger_failures"
    __table_args__ = (Index("ix_trigger_failures_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_run_id)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    suite: Mapped[str | None] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(String(255))
    step: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(SafeText)
