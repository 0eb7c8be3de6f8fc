"""The regression gate: a finished run against its baseline, metric by metric."""

from __future__ import annotations

from posteval import timing
from posteval.db import queries, repo
from posteval.db.engine import session_scope
from posteval.db.retry import retry_transient
from posteval.errors import InputError
from posteval.inputs.suite import Suite
from posteval.judging.baseline import baseline_for
from posteval.judging.compare import Comparison, compare_runs


@timing.timed("regression gate")
def gate(run_id: str, suite: Suite, *, database_url: str | None = None) -> tuple[str, str, Comparison | None]:
    """Compare the run with its baseline and apply the suite's gates; stores and returns the outcome.

    Returns (status, summary, comparison): status is ``passed``, ``failed``, ``no_baseline``, or
    ``incomparable`` when the baseline evaluated other data (the summary says what differs).
    """
    baseline = baseline_for(run_id, database_url=database_url)
    comparison = None
    if baseline is None:
        status, summary = "no_baseline", "no earlier run of this model and suite to compare with"
    else:
        try:
            comparison = compare_runs(
                baseline,
                run_id,
                gates=suite.gates,
                seed=suite.seed,
                n_resamples=suite.bootstrap_resamples,
                database_url=database_url,
            )
        except InputError as exc:
            status, summary = "incomparable", f"baseline {baseline[:12]}: {exc}"
        else:
            status = "failed" if comparison.regressions else "passed"
            summary = f"against {baseline[:12]}: {comparison.summary()}"

    def record() -> None:
        with session_scope(database_url) as session:
            repo.set_gate(session, run_id, baseline, status, summary)

    retry_transient(record, "recording the gate outcome")
    return status, summary, comparison


def stored_gate(run_id: str, *, database_url: str | None = None) -> tuple[str, str] | None:
    """The gate outcome (status, summary) the run already has, or None if it was never gated.

    A run that was gated keeps its verdict: a re-delivered trigger or the nightly flow finding the stored
    run reports that verdict instead of gating it again against whatever the baseline is today.
    """
    summary = queries.run_summary(run_id, database_url=database_url)
    if summary["gate_status"] is None:
        return None
    return str(summary["gate_status"]), str(summary["gate_summary"] or "")
