"""Writes of human evaluation: imported labels, and the human metric rows recomputed from them.

Like every repository function here, these flush and never commit: an import is one transaction at the
caller's edge, so a refused or failed import leaves the stored labels and metrics as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete
from sqlalchemy.orm import Session

from posteval.db.models import ExampleScore, HumanLabel, Metric
from posteval.db.repo import save_results
from posteval.results import MetricResult


def add_human_labels(session: Session, rows: Iterable[dict[str, object]]) -> None:
    """Insert label rows (run_id, dataset_id, kind, example_key, rater, criterion, value, base_run_id,
    export_id); a label a rater already gave is refused by the table's unique constraint."""
    session.add_all(HumanLabel(**row) for row in rows)
    session.flush()


def replace_metric(
    session: Session, run_id: str, dataset_id: int, keys: Sequence[str], result: MetricResult
) -> None:
    """Store ``result`` as the run's metric on the dataset, replacing the row of that name and its scores."""
    where = (
        ExampleScore.run_id == run_id,
        ExampleScore.dataset_id == dataset_id,
        ExampleScore.metric == result.name,
    )
    session.execute(delete(ExampleScore).where(*where))
    session.execute(
        delete(Metric).where(
            Metric.run_id == run_id, Metric.dataset_id == dataset_id, Metric.name == result.name
        )
    )
    session.flush()
    save_results(session, run_id, dataset_id, keys, [result])
