"""Persistence: one transaction writes a run's metrics, examples and reports and moves it to succeeded;
fail() marks it failed, never half-written; record_trigger_failure() keeps a trigger that never got a run.
"""

from __future__ import annotations

from collections.abc import Sequence

from posteval import timing
from posteval.db import claims, repo
from posteval.db.engine import session_scope
from posteval.db.models import EvalRun
from posteval.db.retry import retry_transient
from posteval.errors import ERROR_LIMIT
from posteval.judging.forgetting import ForgettingReport
from posteval.judging.health import HealthReport
from posteval.pipeline.scoring import DatasetOutcome


@timing.timed("database writes")
def persist(
    run_id: str,
    outcomes: Sequence[DatasetOutcome],
    warnings: Sequence[str] = (),
    *,
    health: HealthReport | None = None,
    forgetting: ForgettingReport | None = None,
    database_url: str | None = None,
    claim_id: str | None = None,
) -> None:
    """One transaction: datasets, metrics, per-example scores, health reports, loss curve, succeeded.

    Only while the run is still held by ``claim_id`` (RunTakenOver otherwise); a retry after a commit
    whose acknowledgement was lost finds the run succeeded under the same claim and writes nothing.
    """
    retry_transient(
        lambda: _persist_once(run_id, outcomes, warnings, health, forgetting, database_url, claim_id),
        "storing the run's results",
    )


def _persist_once(
    run_id: str,
    outcomes: Sequence[DatasetOutcome],
    warnings: Sequence[str],
    health: HealthReport | None,
    forgetting: ForgettingReport | None,
    database_url: str | None,
    claim_id: str | None,
) -> None:
    with session_scope(database_url) as session:
        if not repo.hold_for_persist(session, run_id, claim_id):
            return
        for outcome in outcomes:
            ref = outcome.dataset
            row = repo.upsert_dataset(
                session, ref.spec.name, ref.fingerprint, ref.row_count, ref.location or str(ref.spec.path)
            )
            repo.save_results(session, run_id, row.id, outcome.keys, outcome.results)
            repo.save_details(session, run_id, row.id, outcome.details)
        if health is not None:
            curve = health.details.get("loss_curve", [])
            checkpoint_id = session.get_one(EvalRun, run_id).checkpoint_id
            repo.save_loss_points(
                session, checkpoint_id, [(p["step"], p["split"], p["value"]) for p in curve]
            )
            details = {k: v for k, v in health.as_dict().items() if k not in ("verdict", "reason")}
            details["details"] = {k: v for k, v in health.details.items() if k != "loss_curve"}
            repo.save_health(session, run_id, "overfitting", health.verdict, health.reason, details)
        if forgetting is not None:
            repo.save_health(
                session,
                run_id,
                "forgetting",
                forgetting.verdict,
                forgetting.reason,
                {"changes": forgetting.as_dict()["changes"]},
            )
        # Scoring adds its own warnings (a sandbox without network isolation here, say).
        scored = [w for outcome in outcomes for w in outcome.warnings]
        repo.mark_succeeded(session, run_id, list(dict.fromkeys([*warnings, *scored])))


def fail(run_id: str, error: str, *, database_url: str | None = None, claim_id: str | None = None) -> bool:
    """Mark the run failed with ``error`` (cut to one short line) if this delivery still holds it.

    Returns whether it did: a run that succeeded or was taken over is never marked failed by a late
    retry. Nothing of a failed run looks like a succeeded run afterwards.
    """
    message = error if len(error) <= ERROR_LIMIT else error[: ERROR_LIMIT - 15] + " ...(truncated)"

    def write() -> bool:
        with session_scope(database_url) as session:
            return claims.mark_failed(session, run_id, message, claim_id)

    return retry_transient(write, "marking the run failed")


def record_trigger_failure(
    error: str,
    *,
    flow_run_id: str | None,
    checkpoint: str | None,
    suite: str | None,
    model_name: str | None = None,
    step: int | None = None,
    database_url: str | None = None,
) -> str:
    """Keep a triggered evaluation that failed before its run row existed (bad suite, checkpoint that never
    completed), linked to its flow run, so the history lists it with the failed runs."""
    message = error if len(error) <= ERROR_LIMIT else error[: ERROR_LIMIT - 15] + " ...(truncated)"

    def write() -> str:
        with session_scope(database_url) as session:
            return repo.add_trigger_failure(
                session,
                flow_run_id=flow_run_id,
                checkpoint=checkpoint,
                suite=suite,
                model_name=model_name,
                step=step,
                error=message,
            )

    return retry_transient(write, "recording the failed trigger")
