"""posteval: evaluate every fine-tuned checkpoint, keep every result, and catch regressions.

The query API returns pandas DataFrames::

    import posteval
    posteval.runs(model="contracts", status="succeeded", gate="failed")
    posteval.history("accuracy", model="contracts", dataset="contract-type")
    posteval.run_metrics(run_id)
    posteval.compare(baseline_run_id, candidate_run_id).to_frame()

Every function that takes a run id accepts what the CLI accepts: a full id or a unique prefix of at least
4 characters (an unknown or ambiguous id is refused naming it). These load lazily, so ``import posteval``
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "runs": ("posteval.db.queries", "runs"),
    "history": ("posteval.db.queries", "metric_history"),
    "run_metrics": ("posteval.db.queries", "run_metrics"),
    "run_summary": ("posteval.db.queries", "run_summary"),
    "run_health": ("posteval.db.queries", "run_health"),
    "compare": ("posteval.judging.compare", "compare_runs"),
    "baseline_for": ("posteval.judging.baseline", "baseline_for"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'posteval' has no attribute {name!r}")
