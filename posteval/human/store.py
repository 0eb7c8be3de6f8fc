"""`posteval human import`: a filled-in export checked, un-blinded and stored in one transaction, with the
run's human metrics recomputed from every label it now has (all raters, all imports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.db.human import add_human_labels, replace_metric
from posteval.errors import InputError
from posteval.human.labels import Key, Label, read_key, read_labels
from posteval.human.metrics import StoredLabel, human_metric
from posteval.judging.stats import DEFAULT_RESAMPLES
from posteval.results import MetricResult


@dataclass(frozen=True)
class Imported:
    """What an import stored: the run, the rater, how many labels and the recomputed metrics."""

    run: str
    rater: str
    labels: int
    metrics: dict[str, MetricResult]  # dataset -> its human metric


def _statistics(session: Session, run_id: str) -> tuple[int, int]:
    """The run's bootstrap size and seed, as its other metrics used them."""
    settings = reads.run_row(session, run_id).output_settings or {}
    stats = settings.get("statistics") or {}
    return int(stats.get("bootstrap_resamples", DEFAULT_RESAMPLES)), int(stats.get("seed", 0))


def _refuse_stored(session: Session, path: Path, key: Key, rater: str, labels: list[Label]) -> None:
    """Refuse labels this rater already gave, and pairs against another base than the stored ones."""
    stored = reads.human_labels(session, key.run, kind=key.kind)
    given = {(d, k, c) for d, k, r, c, _, _ in stored if r == rater}
    for label in labels:
        if (label.dataset, label.example, label.criterion) in given:
            raise InputError(
                f"{path} line {label.line}: rater {rater!r} already labelled this item (example "
                f"{label.example!r} of {label.dataset!r}) in an earlier import"
            )
    bases = {b for _, _, _, _, _, b in stored if b is not None}
    if key.kind == "pair" and bases and bases != {key.base_run}:
        raise InputError(
            f"{path}: run {key.run} has human preferences against base run {sorted(bases)[0]}; "
            f"this export compares it with {key.base_run}"
        )


def import_labels(
    path: Path, *, rater: str, key_path: Path | None = None, database_url: str | None = None
) -> Imported:
    """Check ``path`` against its key (``key.json`` beside it unless given), store its labels as
    ``rater``'s and recompute the run's human metric on every dataset they touch: all or nothing."""
    if not rater.strip():
        raise InputError("--rater must name the rater")
    key = read_key(key_path or path.parent / "key.json")
    labels = read_labels(path, key)
    with session_scope(database_url) as session:
        if not reads.run_exists(session, key.run):
            raise InputError(f"{key.path}: run {key.run} is not in this database")
        dataset_ids = {dataset.name: dataset.id for dataset, _ in reads.metric_rows(session, key.run)}
        unknown = sorted({label.dataset for label in labels} - set(dataset_ids))
        if unknown:
            raise InputError(f"{key.path}: run {key.run} has no dataset {unknown[0]!r}")
        _refuse_stored(session, path, key, rater, labels)
        add_human_labels(
            session,
            (
                {
                    "run_id": key.run,
                    "dataset_id": dataset_ids[label.dataset],
                    "kind": key.kind,
                    "example_key": label.example,
                    "rater": rater,
                    "criterion": label.criterion,
                    "value": label.value,
                    "base_run_id": key.base_run,
                    "export_id": key.export,
                }
                for label in labels
            ),
        )
        n_resamples, seed = _statistics(session, key.run)
        results = {}
        for dataset in sorted({label.dataset for label in labels}):
            rows = reads.human_labels(session, key.run, kind=key.kind, dataset=dataset)
            stored = [
                StoredLabel(example, who, criterion, value) for _, example, who, criterion, value, _ in rows
            ]
            keys, result = human_metric(
                key.kind, stored, n_resamples=n_resamples, seed=seed, base_run=key.base_run
            )
            replace_metric(session, key.run, dataset_ids[dataset], keys, result)
            results[dataset] = result
    return Imported(key.run, rater, len(labels), results)
