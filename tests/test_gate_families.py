"""The regression gate on every metric family, through the real flow and CLI, on the demo's checkpoints."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from posteval.cli import app
from posteval.db.models import EvalRun
from posteval.errors import GateFailed
from posteval.flows.post_training import evaluate_checkpoint
from posteval.judging.compare import compare_runs
from posteval.settings import get_settings
from tests.helpers import heldout_rows, write_jsonl

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "contracts"
GATE = {"max_drop": 0.0, "alpha": 0.05}
FAMILIES = {
    "clauses/accuracy": "mcnemar_exact",
    "clauses/f1": "paired_bootstrap",
    "clauses/bleu_char": "paired_bootstrap",  # character BLEU: one-word labels have no word 4-grams
    "clauses/rouge1": "mcnemar_exact",  # one-word outputs score 0 or 1
    "clauses/label_mentioned": "mcnemar_exact",
    "general/perplexity": "paired_bootstrap",
}


def _suite(folder: Path, data: Path, gates: dict[str, dict[str, float]], batch_size: int = 16) -> Path:
    suite = {
        "name": "families",
        "allow_incomplete": True,
        "generation": {"max_new_tokens": 4, "stop": ["\n"], "batch_size": batch_size},
        "datasets": [
            {
                "name": "clauses",
                "path": str(data),
                "prompt": "Clause: {text}\nType:",
                "reference": "label",
                "key": "id",
                "labels": ["lease", "nda", "employment"],
                "metrics": [
                    "accuracy",
                    {"f1": {"average": "macro"}},
                    {"bleu": {"tokenize": "char"}},
                    "rouge1",
                    "tests.custom_metrics:label_mentioned",
                ],
            },
            {
                "name": "general",
                "path": str(EXAMPLES / "general.jsonl"),
                "kind": "perplexity",
                "key": "id",
                "metrics": ["perplexity"],
            },
        ],
        "gates": gates,
    }
    path = folder / f"suite-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def _gate_row(url: str, run_id: str) -> tuple[str | None, str | None, str | None]:
    engine = create_engine(url)
    with Session(engine) as session:
        run = session.scalars(select(EvalRun).where(EvalRun.id == run_id)).one()
        row = (run.gate_status, run.gate_summary, run.baseline_run_id)
    engine.dispose()
    return row


def test_every_metric_family_is_gated_through_the_flow(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    tmp_path: Path,
    sqlite_url: str,
) -> None:
    """The sensible fine-tune, then the overfit one: each family's gate regresses with its own test."""
    data = write_jsonl(tmp_path / "clauses.jsonl", heldout_rows(54))
    suite = _suite(tmp_path, data, {key: GATE for key in FAMILIES})
    good = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(suite), model_name="families", database_url=sqlite_url
    )
    with pytest.raises(GateFailed) as failed:
        evaluate_checkpoint(
            checkpoint=str(overfit_checkpoint),
            suite=str(suite),
            model_name="families",
            database_url=sqlite_url,
        )
    status, summary, baseline = _gate_row(sqlite_url, failed.value.run_id)
    assert (status, baseline) == ("failed", good)
    assert summary is not None
    for key, test in FAMILIES.items():
        assert (
            f"{key} dropped " in summary and f", {test})" in summary.split(f"{key} dropped ")[1].split(";")[0]
        )


@pytest.fixture
def cli_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_drop_too_small_to_be_significant_passes_the_gate(
    prefect_harness: None,
    cli_env: None,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    tmp_path: Path,
    sqlite_url: str,
) -> None:
    """Five clauses: accuracy drops, but McNemar on at most 5 discordant pairs has p >= 0.0625 > alpha."""
    data = write_jsonl(tmp_path / "five.jsonl", heldout_rows(5))
    suite = _suite(tmp_path, data, {"clauses/accuracy": GATE})
    runner = CliRunner()
    for checkpoint in (finetuned_checkpoint, overfit_checkpoint):
        result = runner.invoke(app, ["evaluate", str(checkpoint), "--suite", str(suite), "--model", "five"])
        assert result.exit_code == 0, result.output
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        run = session.scalars(
            select(EvalRun).where(EvalRun.model_name == "five", EvalRun.baseline_run_id.is_not(None))
        ).one()
        run_id, baseline = run.id, run.baseline_run_id
    engine.dispose()
    status, summary, _ = _gate_row(sqlite_url, run_id)
    assert status == "passed" and summary is not None and "no regression" in summary
    assert baseline is not None
    accuracy = next(
        r for r in compare_runs(baseline, run_id, database_url=sqlite_url).rows if r.metric == "accuracy"
    )
    assert accuracy.drop is not None and accuracy.drop > 0
    assert accuracy.p_value is not None and accuracy.p_value >= 0.0625


def test_the_issue_reproduction_exits_1_with_the_gate_summary_and_reports(
    prefect_harness: None,
    cli_env: None,
    base_checkpoint: Path,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    tmp_path: Path,
) -> None:
    """examples/contracts copied, the gate on contract-type/f1, base_model set: ft exits 0, overfit 1."""
    folder = shutil.copytree(EXAMPLES.parent, tmp_path / "examples") / "contracts"  # it reads ../code too
    suite = yaml.safe_load((folder / "suite.yaml").read_text())
    suite["gates"] = {"contract-type/f1": {"max_drop": 0.02, "alpha": 0.05}}
    suite["base_model"] = str(base_checkpoint)
    for dataset in suite["datasets"]:  # as `posteval demo` does: the local judge is the base model
        if "judge" in dataset:
            dataset["judge"]["model"] = str(base_checkpoint)
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    runner = CliRunner()
    first = runner.invoke(
        app, ["evaluate", str(finetuned_checkpoint), "--suite", str(folder / "suite.yaml"), "--model", "m"]
    )
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        app,
        [
            "evaluate",
            str(overfit_checkpoint),
            "--suite",
            str(folder / "suite.yaml"),
            "--model",
            "m",
            "--format",
            "json",
        ],
    )
    assert second.exit_code == 1, second.output
    outcome = json.loads(second.stdout)
    assert outcome["gate_status"] == "failed"
    assert "regression: contract-type/f1 dropped " in outcome["gate_summary"]
    assert "paired_bootstrap)" in outcome["gate_summary"]
    report = runner.invoke(app, ["report", outcome["run_id"], "--out", str(tmp_path / "report.html")])
    assert report.exit_code == 0, report.output
    assert "contract-type/f1 dropped" in (tmp_path / "report.html").read_text()


def test_only_output_settings_block_a_comparison(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch-size change is comparable (gate passed); a context-cap change is refused, naming it."""
    data = write_jsonl(tmp_path / "twelve.jsonl", heldout_rows(12))
    gates = {"clauses/accuracy": GATE}
    first = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint),
        suite=str(_suite(tmp_path, data, gates)),
        model_name="cmp",
        database_url=sqlite_url,
    )
    rebatched = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint),
        suite=str(_suite(tmp_path, data, gates, batch_size=4)),
        model_name="cmp",
        database_url=sqlite_url,
    )
    assert rebatched != first
    assert _gate_row(sqlite_url, rebatched)[0] == "passed"
    monkeypatch.setenv("POSTEVAL_MAX_LENGTH", "64")
    get_settings.cache_clear()
    try:
        capped = evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint),
            suite=str(_suite(tmp_path, data, gates, batch_size=4)),
            model_name="cmp",
            database_url=sqlite_url,
        )
    finally:
        monkeypatch.delenv("POSTEVAL_MAX_LENGTH")
        get_settings.cache_clear()
    status, summary, _ = _gate_row(sqlite_url, capped)
    assert status == "incomparable"
    assert summary is not None and "dataset 'clauses' max_length None -> 64" in summary
