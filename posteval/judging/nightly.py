"""The nightly run's plain half: which checkpoints it re-evaluates, and what changed since the night before.

Tracked models are the lineages (run model names) with at least one run; each contributes its latest
checkpoint in lineage order (posteval.db.lineage: highest training step, then the newest run), evaluated
only on the suites (by name) the model was evaluated on before, never every model on every suite. Pinned
baselines contribute their checkpoint for the suite they are pinned on, so a changed suite gets a fresh
baseline run before the latest checkpoints are gated.

A run that had already finished before tonight's night began keeps its stored gate verdict and counts as
unchanged: an old regression is reported once, by the flow run that found it, not again every night.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.db.lineage import lineage_key, utc
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
    with session_scope(database_url) as session:
        evaluated = reads.evaluated_checkpoints(session)
        pinned = reads.pinned_checkpoints(session)
    latest: dict[str, tuple[tuple[int, datetime], Target]] = {}
    for model, path, step, created in evaluated:
        rank = lineage_key(step, created)
        if model not in latest or rank > latest[model][0]:
            latest[model] = (rank, Target(model, path, step))
    found = [Target(model, path, step, suite) for model, suite, path, step in sorted(pinned)]
    found += [target for _, (_, target) in sorted(latest.items())]
    return [t for t in found if not models or t.model in models]


def plan(
    suites: dict[str, str], *, models: Sequence[str] | None = None, database_url: str | None = None
) -> list[tuple[Target, str]]:
    """What the night evaluates: (target, suite file) pairs, ``suites`` mapping each file to its suite's
    name. A pinned target goes only on its suite; a model's latest checkpoint on each suite the model has
    a run of (any status), in the order the suite files were given."""
    with session_scope(database_url) as session:
        evaluated_on = reads.model_suites(session)
    pairs = []
    for target in targets(models=models, database_url=database_url):
        for path, name in suites.items():
            wanted = name == target.suite if target.pinned else name in evaluated_on.get(target.model, ())
            if wanted:
                pairs.append((target, path))
    return pairs


def previous_run(
    model: str, suite: str, *, before: datetime, exclude: str, database_url: str | None = None
) -> str | None:
    """The newest succeeded run of ``model`` on the suite named ``suite`` created before ``before``."""
    with session_scope(database_url) as session:
        rows = reads.succeeded_runs(session, model, suite)
    earlier = (run_id for run_id, _, _, created in rows if run_id != exclude and utc(created) < utc(before))
    return next(earlier, None)


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
    tonight: datetime,
    regressed: bool = False,
    database_url: str | None = None,
) -> NightRow:
    """Put tonight's ``run_id`` on ``row``, compared with what the previous night knew.

    A run that had finished before the night began (``tonight``) is unchanged and keeps its stored gate
    verdict (a failed one is named in the note, never counted again). A run evaluated tonight is compared
    with the newest succeeded run of the same model and suite from before the previous night ended
    (``since``; on the first night: from before it), with paired tests; runs of different data are not
    compared, and say so.
    """
    summary = run_summary(run_id, database_url=database_url)
    created = utc(summary["created_at"])  # type: ignore[arg-type]
    finished = summary["finished_at"]
    row.run_id = run_id
    if finished is not None and utc(finished) < utc(tonight):  # type: ignore[arg-type]
        row.status = "unchanged"
        if summary["gate_status"] == "failed":
            row.note = f"gate failed before tonight (kept, not counted again): {summary['gate_summary']}"
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
