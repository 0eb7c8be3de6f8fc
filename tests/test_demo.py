"""`posteval demo`: two fine-tunes through the flow; the overfit one is flagged, the sensible one is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from posteval.cli import print_run, run_evaluation
from posteval.cli.demo import run_demo
from posteval.db import queries
from posteval.settings import get_settings


@pytest.fixture
def demo_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_demo_flags_the_overfit_checkpoint_only(prefect_harness: None, tmp_path: Path, demo_db: str) -> None:
    console = Console(record=True, width=120)
    good, overfit = run_demo(tmp_path / "work", console=console, evaluate=run_evaluation, show=print_run)
    verdicts = {
        run: {kind: report["verdict"] for kind, report in queries.run_health(run).items()}
        for run in (good, overfit)
    }
    assert verdicts == {
        good: {"overfitting": "healthy", "forgetting": "none"},
        overfit: {"overfitting": "overfitting", "forgetting": "forgetting"},
    }
    accuracy = {
        run: queries.run_metrics(run)
        .query("dataset == 'contract-type' and name == 'accuracy'")["value"]
        .item()
        for run in (good, overfit)
    }
    assert accuracy[good] > accuracy[overfit]
    for run in (good, overfit):  # the open-ended answers, judged by the local model against the base's
        judged = queries.run_metrics(run).query("dataset == 'clause-summary'").set_index("name")["value"]
        assert 0.0 <= judged["win_rate"] <= 1.0 and judged["judge_parse_failure_rate"] == 0.0
    gates = {run: queries.run_summary(run)["gate_status"] for run in (good, overfit)}
    assert gates == {good: "no_baseline", overfit: "failed"}
    assert len(queries.loss_curve(queries.run_summary(overfit)["checkpoint_id"])) > 20  # type: ignore[arg-type]
