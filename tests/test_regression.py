"""Baselines, paired comparisons and the regression gate, through the flow and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from posteval.cli import app
from posteval.db import queries
from posteval.db.models import EvalRun
from posteval.errors import GateFailed, InputError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.inputs.suite import Gate
from posteval.judging.baseline import baseline_for, set_baseline
from posteval.judging.compare import compare_runs
from posteval.settings import get_settings
from tests.helpers import heldout_rows, write_jsonl

SUITE = """\
name: {name}
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {{max_new_tokens: 4, batch_size: 16}}
datasets:
  - name: clauses
    path: {data}
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    labels: [lease, nda, employment]
    metrics: [accuracy, {{f1: {{average: macro}}}}]
gates:
  clauses/accuracy: {{max_drop: 0.02, alpha: 0.05}}
"""


@pytest.fixture(scope="module")
def clauses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("gate") / "clauses.jsonl", heldout_rows(54))


def _suite(folder: Path, name: str, data: Path) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, data=data))
    return path


@pytest.fixture(scope="module")
def two_runs(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    clauses: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_url: str,
) -> tuple[str, str, Path]:
    """The sensible fine-tune, then the overfit one (a later step) of the same model: the gate fails."""
    suite = _suite(tmp_path_factory.mktemp("suites"), "gated", clauses)
    good = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(suite), model_name="lineage", database_url=sqlite_url
    )
    with pytest.raises(GateFailed) as failed:
        evaluate_checkpoint(
            checkpoint=str(overfit_checkpoint),
            suite=str(suite),
            model_name="lineage",
            database_url=sqlite_url,
        )
    return good, failed.value.run_id, suite


def test_previous_run_of_the_model_is_the_baseline(two_runs: tuple[str, str, Path], sqlite_url: str) -> None:
    good, bad, _ = two_runs
    assert baseline_for(bad, database_url=sqlite_url) == good
    assert baseline_for(good, database_url=sqlite_url) is None


def test_gate_failure_keeps_the_run_succeeded_with_the_gate_recorded(
    two_runs: tuple[str, str, Path], sqlite_url: str
) -> None:
    good, bad, _ = two_runs
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        first, second = session.get_one(EvalRun, good), session.get_one(EvalRun, bad)
        assert (first.status, first.gate_status) == ("succeeded", "no_baseline")
        assert (second.status, second.gate_status, second.baseline_run_id) == ("succeeded", "failed", good)
        assert second.gate_summary is not None
        assert second.gate_summary.startswith(f"against {good[:12]}: regression: clauses/accuracy dropped ")
    engine.dispose()


def test_comparison_uses_mcnemar_and_lists_flipped_examples(
    two_runs: tuple[str, str, Path], sqlite_url: str
) -> None:
    good, bad, _ = two_runs
    comparison = compare_runs(good, bad, database_url=sqlite_url)
    rows = {(r.dataset, r.metric): r for r in comparison.rows}
    accuracy = rows[("clauses", "accuracy")]
    good_m = queries.run_metrics(good, database_url=sqlite_url).set_index("name")["value"]
    bad_m = queries.run_metrics(bad, database_url=sqlite_url).set_index("name")["value"]
    assert accuracy.delta == pytest.approx(bad_m["accuracy"] - good_m["accuracy"])
    assert accuracy.test == "mcnemar_exact"
    assert accuracy.n == 54
    assert len(accuracy.worsened) - len(accuracy.improved) == round(-accuracy.delta * 54)
    f1 = rows[("clauses", "f1")]  # macro F1 is corpus-level: a paired bootstrap of macro F1 itself
    assert f1.test == "paired_bootstrap"
    assert f1.delta == pytest.approx(bad_m["f1"] - good_m["f1"])
    assert f1.ci_low is not None and f1.ci_high is not None and f1.ci_low <= f1.ci_high


def test_a_gate_on_a_corpus_metric_fires_on_its_paired_bootstrap(
    two_runs: tuple[str, str, Path], sqlite_url: str
) -> None:
    good, bad, _ = two_runs
    gates = {"clauses/f1": Gate(max_drop=0.02, alpha=0.05)}
    comparison = compare_runs(good, bad, gates=gates, database_url=sqlite_url)
    f1 = next(r for r in comparison.rows if r.metric == "f1")
    assert f1.p_value is not None and f1.p_value < 0.05
    assert f1.ci_high is not None and f1.ci_high < 0  # the whole CI of the delta lies below 0
    assert f1.regression
    assert comparison.summary().startswith("regression: clauses/f1 dropped ")


def test_gate_publishes_a_prefect_table_artifact(two_runs: tuple[str, str, Path]) -> None:
    _, bad, _ = two_runs
    key = f"posteval-comparison-{bad[:12]}"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert [a.type for a in artifacts] == ["table"]
    table = artifacts[0].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {(r["dataset"], r["metric"], r["gate"]) for r in rows} >= {("clauses", "accuracy", "REGRESSION")}


def test_pinned_baseline_wins_over_the_previous_run(two_runs: tuple[str, str, Path], sqlite_url: str) -> None:
    good, bad, _ = two_runs
    set_baseline("lineage", "gated", run_id=bad, database_url=sqlite_url)
    try:
        assert baseline_for(good, database_url=sqlite_url) == bad
    finally:
        set_baseline("lineage", "gated", run_id=good, database_url=sqlite_url)


def test_comparing_runs_of_different_suites_is_refused(
    two_runs: tuple[str, str, Path],
    finetuned_checkpoint: Path,
    clauses: Path,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    good, _, _ = two_runs
    other = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint),
        suite=str(_suite(tmp_path, "other", clauses)),
        model_name="elsewhere",
        database_url=sqlite_url,
    )
    with pytest.raises(InputError, match=r"are of different suites \('gated' and 'other'\)"):
        compare_runs(good, other, database_url=sqlite_url)


def test_comparing_runs_on_different_data_names_the_dataset(
    two_runs: tuple[str, str, Path], base_checkpoint: Path, sqlite_url: str, tmp_path: Path
) -> None:
    good, _, _ = two_runs
    data = write_jsonl(tmp_path / "fewer.jsonl", heldout_rows(20))
    changed = evaluate_checkpoint(
        checkpoint=str(base_checkpoint),
        suite=str(_suite(tmp_path, "gated", data)),
        model_name="lineage-b",  # the base, so the lineage above keeps its two checkpoints
        database_url=sqlite_url,
    )
    with pytest.raises(
        InputError, match=r"evaluated different data: dataset fingerprints differ for clauses \("
    ):
        compare_runs(good, changed, database_url=sqlite_url)


def test_unknown_run_id_lists_the_closest(two_runs: tuple[str, str, Path], sqlite_url: str) -> None:
    good, _, _ = two_runs
    typo = good[:7] + ("0" if good[7] != "0" else "1")
    with pytest.raises(InputError, match=rf"no run with id '{typo}'; closest: .*{good[:12]}"):
        queries.resolve_run_id(typo, database_url=sqlite_url)


def test_history_of_a_metric_never_recorded_says_so(two_runs: tuple[str, str, Path], sqlite_url: str) -> None:
    with pytest.raises(
        InputError, match=r"metric 'bleu' was never recorded for model 'lineage'; recorded: accuracy, f1"
    ):
        queries.metric_history("bleu", model="lineage", database_url=sqlite_url)


@pytest.fixture
def cli_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_history_compare_and_evaluate_exit_codes(
    two_runs: tuple[str, str, Path], cli_env: None, overfit_checkpoint: Path, tmp_path: Path
) -> None:
    good, bad, suite = two_runs
    runner = CliRunner()
    history = runner.invoke(
        app,
        [
            "history",
            "accuracy",
            "--model",
            "lineage",
            "--format",
            "json",
            "--plot",
            str(tmp_path / "trend.png"),
        ],
    )
    assert history.exit_code == 0, history.output
    assert [row["run_id"] for row in json.loads(history.stdout)] == [good, bad]
    assert (tmp_path / "trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    csv = runner.invoke(app, ["compare", good[:8], bad[:8], "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    assert csv.stdout.splitlines()[0].startswith("dataset,metric,higher_is_better,baseline,candidate,delta")

    again = runner.invoke(
        app,
        [
            "evaluate",
            str(overfit_checkpoint),
            "--suite",
            str(suite),
            "--model",
            "lineage",
            "--format",
            "json",
        ],
    )
    assert again.exit_code == 1
    assert json.loads(again.stdout)["gate_status"] == "failed"


def test_comparing_runs_of_a_changed_suite_names_the_change(
    two_runs: tuple[str, str, Path], base_checkpoint: Path, clauses: Path, sqlite_url: str, tmp_path: Path
) -> None:
    good, _, _ = two_runs
    edited = _suite(tmp_path, "gated", clauses)
    edited.write_text(
        edited.read_text().replace('prompt: "Clause: {text}\\nType:"', 'prompt: "{text}\\nLabel:"')
    )
    changed = evaluate_checkpoint(
        checkpoint=str(base_checkpoint), suite=str(edited), model_name="lineage-c", database_url=sqlite_url
    )
    with pytest.raises(InputError, match=r"used different output settings: dataset 'clauses' prompt "):
        compare_runs(good, changed, database_url=sqlite_url)
