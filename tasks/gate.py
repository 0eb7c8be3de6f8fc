"""Gate stage: compare the run with its baseline, publish the comparison, fail the flow on a regression."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.db import queries
from posteval.inputs.suite import Suite
from posteval.views.output import records
from posteval.views.run_details import markdown

ARTIFACT_COLUMNS = [
    "dataset",
    "metric",
    "baseline",
    "candidate",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "test",
    "worsened",
    "improved",
    "gate",
    "regression",
]


def _key(run_id: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return f"posteval-comparison-{run_id[:12]}"


@task(name="regression-gate", cache_policy=NO_CACHE)
def gate_task(run_id: str, suite: Suite, database_url: str | None) -> tuple[str, str]:
    """Compare with the baseline, store the gate outcome, and publish it as Prefect artifacts."""
    status, summary, comparison = pipeline.gate(run_id, suite, database_url=database_url)
    if comparison is not None:
        frame = comparison.to_frame()[ARTIFACT_COLUMNS]
        create_table_artifact(
            table=records(frame), key=_key(run_id), description=f"posteval run {run_id}: {summary}"
        )
    reports = queries.run_details(run_id, database_url=database_url)
    shown = f"\n## Reports\n\n{markdown(reports)}" if reports else ""
    create_markdown_artifact(
        markdown=f"# posteval run `{run_id}`\n\n**gate: {status}** — {summary}\n{shown}",
        key=f"posteval-gate-{run_id[:12]}",
        description="posteval regression gate",
    )
    return status, summary
