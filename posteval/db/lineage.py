"""Lineage order, the one rule for "earlier" and "later" among a model's runs: the checkpoint's training step
(a checkpoint without one comes before every step), then the run's creation time.

Baselines (the previous run), the nightly run (each model's latest checkpoint) and the history queries all
order by :func:`lineage_key`, so they never disagree about which run came first.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

NO_STEP = -1  # a checkpoint without a training step sorts before step 0


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC time: SQLite returns naive datetimes for timezone-aware columns (stored
    in UTC), PostgreSQL aware ones; both must compare."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def lineage_key(step: int | float | None, run_created: datetime) -> tuple[int, datetime]:
    """The sort key of a run in its model's lineage: (training step, run creation time)."""
    missing = step is None or (isinstance(step, float) and math.isnan(step))
    return (NO_STEP if missing else int(step), utc(run_created))  # type: ignore[arg-type]


def in_lineage_order(frame: pd.DataFrame, *, step: str = "step", created: str = "created_at") -> pd.DataFrame:
    """The rows of ``frame`` (one per run) sorted by :func:`lineage_key`, index reset."""
    keys = [lineage_key(s, c) for s, c in zip(frame[step], frame[created], strict=True)]
    order = sorted(range(len(frame)), key=keys.__getitem__)
    return frame.iloc[order].reset_index(drop=True)
