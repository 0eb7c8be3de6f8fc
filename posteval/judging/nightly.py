"""The nightly run's plain half: which checkpoints it re-evaluates, and what changed since the night before.

Tracked models are the lineages (run model names) with at least one run; each contributes its latest
checkpoint in lineage order (posteval.db.lineage: highest training step, then the newest run). Pinned
baselines contribute their checkpoint for the suite they are pinned on, so a changed suite gets a fresh
baseline run before the latest checkpoints are gated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from posteval.db.engine import session_scope
from posteval.db.lineage import lineage_key, utc
from posteval.db.models import Baseline, Checkpoint, EvalRun, Suite
from posteval.db.queries import run_summary
from posteval.errors import InputError
from posteval.judging.compare import MetricComparison, compare_runs
from posteval.numbers import num


@dataclass(frozen=True)
class Target:
    """A checkpoint the nightly run evaluates under a model name; a pinned one only on its ``suite``."""

    model: str
    path: str
    step: int | None
    suite: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether this is a pinned baseline's checkpoint."""
        return self.suite is not None


def targets(*, models: Sequence[str] | None = None, database_url: str | None = None) -> list[Target]:
    """Pinned baselines' checkpoints first, then the latest checkpoint of every tracked model, by name."""
    lineage = select(EvalRun.model_name, Checkpoint.path, Checkpoint.training_step, EvalRun.created_at)
    lineage = lineage.join(Checkpoint, EvalRun.checkpoint_id == Checkpoint.id)
    pinned_run = select(Baseline.model_name, Baseline.suite_name, Checkpoint.path, Checkpoint.training_step)
    pinned_run = pinned_run.join(EvalRun, Baseline.run_id == EvalRun.id).join(
        Checkpoint, EvalRun.checkpoint_id == Checkpoint.id
    )
    pinned_checkpoint = select(
        Baseline.model_name, Baseline.suite_name, Checkpoint.path, Checkpoint.training_step
    ).join(Checkpoint, Baseline.checkpoint_id == Checkpoint.id)
    with session_scope(database_url) as session:
        evaluated = session.execute(lineage).all()
        pinned = [*session.execute(pinned_run).all(), *session.execute(pinned_checkpoint).all()]
    latest: dict[str, tuple[tuple[int, datetime], Target]] = {}
    for model, path, step, created in evaluated:
        rank = lineage_key(step, created)
        if model not in latest or rank > latest[model][0]:
            latest[model] = (rank, Target(model, path, step))
    found = [Target(model, path, step, suite) for model, suite, path, step in sorted(pinned)]
    found += [target for _, (_, target) in sorted(latest.items())]
    return [t for t in found if not models or t.model in models]


def previous_run(
    model: str, suite: str, *, before: datetime, exclude: str, database_url: str | None = None
) -> str | None:
    """The newest succeeded run of ``model`` on the suite named ``suite`` created before ``before``."""
    query = (
        select(EvalRun.id, EvalRun.created_at)
        .join(Suite, EvalRun.suite_id == Suite.id)
        .where(EvalRun.model_name == model, Suite.name == suite, EvalRun.status == "succeeded")
        .where(EvalRun.id != exclude)
        .order_by(EvalRun.created_at.desc())
    )
    with session_scope(database_url) as session:
        rows = session.execute(query).all()
    return next((run_id for run_id, created in rows if utc(created) < utc(before)), None)


@dataclass
class NightRow:
    """What the night did for one checkpoint and suite, and how its metrics moved."""

    model: str
    checkpoint: str
    step: int | None
    suite: str
    pinned: bool = False
    status: str = "failed"  # evaluated | unchanged | regressed | failed
    run_id: str | None = None
    previous_run_id: str | None = None
    note: str | None = None
    changes: list[MetricComparison] = field(default_factory=list)


def record_run(
    row: NightRow,
    run_id: str,
    *,
    since: datetime | None,
    regressed: bool = False,
    database_url: str | None = None,
) -> NightRow:
    """Put tonight's ``run_id`` on ``row``, compared with what the previous night knew.

    A run that already existed when the previous night ended (``since``) is unchanged. A newer one is
    compared with the newest succeeded run of the same model and suite from before then (on the first
    night: from before it), with paired tests; runs of different data are not compared, and say so.
    """
    summary = run_summary(run_id, database_url=database_url)
    created = utc(summary["created_at"])  # type: ignore[arg-type]
    row.run_id = run_id
    if since is not None and created <= since and not regressed:
        row.status = "unchanged"
        return row
    row.status = "regressed" if regressed else "evaluated"
    before = created if since is None else min(created, since)
    row.previous_run_id = previous_run(
        row.model, row.suite, before=before, exclude=run_id, database_url=database_url
    )
    if row.previous_run_id is None:
        row.note = "first run of this model and suite"
        return row
    try:
        row.changes = compare_runs(row.previous_run_id, run_id, database_url=database_url).rows
    except InputError as exc:
        row.note = f"not compared: {exc}"
    return row


def summary_markdown(rows: Sequence[NightRow], *, since: datetime | None) -> str:
    """The night as Markdown: one line per checkpoint and suite, then the metrics that moved."""
    night = "the first night" if since is None else f"since {since.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    lines = [f"# posteval nightly: what changed {night}", ""]
    lines += [
        "| model | step | suite | status | run | previous run | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        model = f"{r.model} (pinned)" if r.pinned else r.model
        cells = [model, num(r.step, "d"), r.suite, r.status, (r.run_id or "-")[:12]]
        cells += [(r.previous_run_id or "-")[:12], r.note or ""]
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| (no evaluated models yet) | | | | | | |")
    for r in rows:
        moved = [c for c in r.changes if c.delta]
        if moved:
            lines += [
                "",
                f"## {r.model} on {r.suite}",
                "",
                "| dataset | metric | previous | tonight | change | p |",
            ]
            lines.append("|---|---|---|---|---|---|")
            for c in moved:
                better = (c.delta or 0) > 0 if c.higher_is_better else (c.delta or 0) < 0
                direction = "better" if better else "worse"
                cells = [c.dataset, c.metric, num(c.baseline, ".4g"), num(c.candidate, ".4g")]
                cells += [f"{num(c.delta, '+.4g')} {direction}", num(c.p_value, ".2g")]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
