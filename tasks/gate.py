"""Gate stage: compare the run with its baseline, publish the outcome, fail the flow on a regression.

Two Prefect artifacts, in reading order: ``posteval-gate-<run>``, a short Markdown summary (verdict, the
gated metrics rounded, regressions marked, where the full HTML report was written), then
``posteval-comparison-<run>``, the table of every compared metric (rounded, the gate verdict third).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.errors import short_error
from posteval.inputs.suite import Suite
from posteval.settings import get_settings
from posteval.views.gate_summary import comparison_records, gate_markdown

log = logging.getLogger(__name__)


def _key(run_id: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return f"posteval-comparison-{run_id[:12]}"


def report_path(run_id: str) -> Path:
    """Where the gate writes the run's full HTML report: POSTEVAL_HOME/reports/."""
    return get_settings().home / "reports" / f"posteval-report-{run_id[:12]}.html"


def _write_report(run_id: str, database_url: str | None) -> tuple[Path | None, str]:
    """The run's HTML report written for the summary to point at; a failure to write it is reported in
    the summary and the log, never the gate's outcome."""
    from posteval.views.report import write_report

    try:
        return write_report(run_id, report_path(run_id), database_url=database_url), ""
    except Exception as exc:  # a view: whatever breaks it must not change the verdict
        log.warning("posteval: the HTML report of run %s was not written: %s", run_id, short_error(exc))
        return None, short_error(exc)


@task(name="regression-gate", cache_policy=NO_CACHE)
def gate_task(run_id: str, suite: Suite, database_url: str | None) -> tuple[str, str]:
    """Compare with the baseline, store the gate outcome, and publish it as Prefect artifacts."""
    status, summary, comparison = pipeline.gate(run_id, suite, database_url=database_url)
    report, problem = _write_report(run_id, database_url)
    table_key = _key(run_id) if comparison is not None else None
    create_markdown_artifact(
        markdown=gate_markdown(
            run_id, status, summary, comparison, report=report, report_problem=problem, table_key=table_key
        ),
        key=f"posteval-gate-{run_id[:12]}",
        description=f"posteval regression gate: {status}",
    )
    if comparison is not None and table_key is not None:
        create_table_artifact(
            table=comparison_records(comparison),
            key=table_key,
            description=f"posteval run {run_id[:12]}: every compared metric (gate verdict third)",
        )
    return status, summary
