"""The nightly flow: pinned baselines and every tracked model's latest checkpoint on the current suites it
was evaluated on."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import flow, get_client
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.runtime import flow_run

from posteval.errors import GateFailed, InputError, PostevalError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.inputs.suite import load_suite
from posteval.judging import nightly as night

FLOW_NAME = "posteval-nightly"
ARTIFACT_KEY = "posteval-nightly"


def previous_night_end() -> datetime | None:
    """When the previous nightly run (completed or failed) ended, or None on the first night."""
    current = flow_run.get_id()
    not_me = FlowRunFilterId(not_any_=[UUID(current)]) if current else None
    finished = FlowRunFilterStateType(any_=[StateType.COMPLETED, StateType.FAILED])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
            flow_run_filter=FlowRunFilter(id=not_me, state=FlowRunFilterState(type=finished)),
            sort=FlowRunSort.END_TIME_DESC,
            limit=1,
        )
    return runs[0].end_time if runs and runs[0].end_time else None


def evaluate(
    target: night.Target,
    suite: str,
    row: night.NightRow,
    nights: tuple[datetime | None, datetime],
    options: dict[str, Any],
) -> None:
    """Evaluate one target on one suite as a subflow (``options``: database and task runner) into ``row``."""
    state = evaluate_checkpoint(
        checkpoint=target.path,
        suite=suite,
        trigger="nightly",
        model_name=target.model,
        **options,
        return_state=True,
    )
    db = options["database_url"]
    since, tonight = nights  # when the previous night ended, when this one began
    outcome = state.result(raise_on_failure=False)
    if state.is_completed():
        night.record_run(row, str(outcome), since=since, tonight=tonight, database_url=db)
    elif isinstance(outcome, GateFailed):
        night.record_run(row, outcome.run_id, since=since, tonight=tonight, regressed=True, database_url=db)
        if row.status == "regressed":  # a verdict from before tonight stays as record_run noted it
            row.note = str(outcome).removeprefix(f"run {outcome.run_id}: ")
    else:
        row.note = str(outcome) if isinstance(outcome, BaseException) else (state.message or state.name)


@flow(name=FLOW_NAME, log_prints=False)
def nightly(
    suites: list[str],
    models: list[str] | None = None,
    database_url: str | None = None,
    task_runner: str = "default",
    dask_address: str | None = None,
) -> list[dict[str, Any]]:
    """Re-evaluate pinned baselines on their suite, then the latest checkpoint of every tracked model on
    each given suite it was evaluated on before (:func:`posteval.judging.nightly.plan`).

    Runs are idempotent on content, so an unchanged checkpoint, suite and data reuse the stored run, its
    gate verdict and every cached output: such a run is unchanged, whatever its verdict. Publishes the
    Markdown artifact ``posteval-nightly`` with what changed since the previous night; ends Failed when an
    evaluation failed or a regression gate failed tonight. ``task_runner`` and ``dask_address`` go to each
    post-training flow run.
    """
    if not suites:
        raise InputError("nightly: no suites given; pass the suite files to re-evaluate with")
    tonight = datetime.now(UTC)
    names = {suite: load_suite(suite).suite.name for suite in suites}
    since = previous_night_end()
    options = {"database_url": database_url, "task_runner": task_runner, "dask_address": dask_address}
    rows: list[night.NightRow] = []
    for target, suite in night.plan(names, models=models, database_url=database_url):
        row = night.NightRow(target.model, target.path, target.step, names[suite], pinned=target.pinned)
        evaluate(target, suite, row, (since, tonight), options)
        rows.append(row)
    create_markdown_artifact(
        night.summary_markdown(rows, since=since),
        key=ARTIFACT_KEY,
        description="posteval: the night's changes",
    )
    bad = [f"{r.model} on {r.suite} ({r.status})" for r in rows if r.status in ("failed", "regressed")]
    if bad:
        raise PostevalError(
            f"nightly: {len(bad)} of {len(rows)} evaluations need attention: {', '.join(bad)}"
        )
    return [asdict(row) for row in rows]
