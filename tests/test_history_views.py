"""What the history shows stays true: a run keeps the checkpoint path and step it was evaluated at, and gate
verdicts are visible (runs list, --gate, compare) with every Python API function taking the CLI's run ids."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import posteval
from posteval.cli import app
from posteval.db.engine import session_scope
from posteval.db.models import Checkpoint, EvalRun, Suite
from posteval.errors import GateFailed, InputError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.settings import get_settings
from posteval.views.report import render_report
from tests.helpers import heldout_rows, write_jsonl

SUITE = """\
name: kept
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


@dataclass(frozen=True)
class Lineage:
    url: str
    step30: Path  # checkpoint-30: the fine-tune with its trainer_state.json
    final: Path  # the final save of the same weights, no trainer_state.json
    step: int | None
    good: str  # checkpoint-30's run (gate: no_baseline)
    bad: str  # the overfit checkpoint's run (gate: failed)


@pytest.fixture(scope="module")
def lineage(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Lineage:
    """checkpoint-30 evaluated, then a regressed later checkpoint, then a final folder with checkpoint-30's
    weights triggered under the same model."""
    folder = tmp_path_factory.mktemp("kept")
    url = f"sqlite:///{folder / 'kept.db'}"
    from posteval.db.migrate import upgrade

    upgrade(url)
    suite = folder / "kept.yaml"
    suite.write_text(SUITE.format(data=write_jsonl(folder / "clauses.jsonl", heldout_rows(54))))
    step30 = Path(shutil.copytree(finetuned_checkpoint, folder / "run" / "checkpoint-30"))
    final = Path(shutil.copytree(finetuned_checkpoint, folder / "run" / "final"))
    (final / "trainer_state.json").unlink()
    options = {"suite": str(suite), "model_name": "lineage", "database_url": url}
    good = evaluate_checkpoint(checkpoint=str(step30), **options)
    with pytest.raises(GateFailed) as failed:
        evaluate_checkpoint(checkpoint=str(overfit_checkpoint), **options)
    again = evaluate_checkpoint(checkpoint=str(final), **options)
    assert again == good  # the same weights, suite and model: the stored run
    step = resolve_checkpoint(step30).training_step
    return Lineage(url, step30, final, step, good, failed.value.run_id)


@pytest.fixture
def cli(lineage: Lineage, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", lineage.url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _json(runner: CliRunner, *args: str) -> object:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- point 5: the history cannot be rewritten ---------------------------------------------------------------


def test_the_checkpoint_row_follows_the_latest_sighting(lineage: Lineage) -> None:
    """The scenario is real: the content-keyed checkpoint row now points at the final folder."""
    with session_scope(lineage.url) as session:
        run = session.get_one(EvalRun, lineage.good)
        assert session.get_one(Checkpoint, run.checkpoint_id).path == str(lineage.final)


def test_runs_show_keeps_the_path_and_step_the_run_was_evaluated_at(lineage: Lineage, cli: CliRunner) -> None:
    assert lineage.step is not None
    shown = _json(cli, "runs", "show", lineage.good[:8], "--format", "json")
    assert (shown["checkpoint"], shown["step"]) == (str(lineage.step30), lineage.step)  # type: ignore[index]
    table = cli.invoke(app, ["runs", "show", lineage.good[:8]])
    assert f"checkpoint {lineage.step30} (step {lineage.step})" in table.stdout.replace("\n", "")


def test_runs_list_and_history_keep_the_path_and_step(lineage: Lineage, cli: CliRunner) -> None:
    listed = _json(cli, "runs", "list", "--model", "lineage", "--format", "json")
    mine = next(r for r in listed if r["run_id"] == lineage.good)  # type: ignore[union-attr]
    assert (mine["checkpoint"], mine["step"]) == (str(lineage.step30), lineage.step)
    history = _json(cli, "history", "accuracy", "--model", "lineage", "--format", "json")
    first = history[0]  # type: ignore[index]
    assert (first["run_id"], first["step"]) == (lineage.good, lineage.step)


def test_python_api_and_report_keep_the_path(lineage: Lineage) -> None:
    summary = posteval.run_summary(lineage.good, database_url=lineage.url)
    assert (summary["checkpoint"], summary["step"]) == (str(lineage.step30), lineage.step)
    frame = posteval.runs(model="lineage", database_url=lineage.url).set_index("run_id")
    assert frame.loc[lineage.good, "checkpoint"] == str(lineage.step30)
    document = render_report(lineage.good, database_url=lineage.url)
    assert f"{lineage.step30} (step {lineage.step})" in document
    assert str(lineage.final) not in document


# -- point 7: gate verdicts are easy to find ----------------------------------------------------------------


def test_runs_list_shows_the_gate_and_filters_on_it(lineage: Lineage, cli: CliRunner) -> None:
    failed = _json(cli, "runs", "list", "--gate", "failed", "--format", "json")
    assert [(r["run_id"], r["status"], r["gate"]) for r in failed] == [  # type: ignore[union-attr]
        (lineage.bad, "succeeded", "failed")
    ]
    passed = _json(cli, "runs", "list", "--gate", "passed", "--format", "json")
    assert passed == []
    table = cli.invoke(app, ["runs", "list", "--model", "lineage"])
    lines = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if "lineage" in line}
    assert [c.strip() for c in lines[lineage.bad[:12]].split("│")][6:8] == ["succeeded", "failed"]
    assert [c.strip() for c in lines[lineage.good[:12]].split("│")][6:8] == ["succeeded", "no_baseline"]
    api = posteval.runs(gate="failed", database_url=lineage.url)
    assert list(api["run_id"]) == [lineage.bad]


def test_an_unknown_gate_filter_is_one_line_and_exit_2(cli: CliRunner) -> None:
    result = cli.invoke(app, ["runs", "list", "--gate", "red"])
    assert result.exit_code == 2
    assert "--gate 'red': expected one of passed, failed, no_baseline, incomparable" in result.output
    with pytest.raises(InputError, match="gate 'red': expected one of passed, failed"):
        posteval.runs(gate="red")


def test_compare_shows_the_verdict_of_the_gated_metric_that_failed(lineage: Lineage, cli: CliRunner) -> None:
    table = cli.invoke(app, ["compare", lineage.good[:8], lineage.bad[:8]])
    assert table.exit_code == 0, table.output
    rows = {
        tuple(c.strip() for c in line.split("│")[1:3]): line.split("│")[-2].strip()
        for line in table.stdout.splitlines()
        if line.count("│") > 10
    }
    assert rows[("clauses", "accuracy")] == "REGRESSION"
    assert rows[("clauses", "f1")] == "-"  # not gated
    frame = posteval.compare(lineage.good[:8], lineage.bad[:8], database_url=lineage.url).to_frame()
    by_metric = frame.set_index("metric")
    assert bool(by_metric.loc["accuracy", "regression"]) is True
    assert by_metric.loc["accuracy", "gate"] == "max_drop 0.02, alpha 0.05"


@pytest.mark.parametrize(
    "call",
    [
        lambda run, url: posteval.run_metrics(run, database_url=url).to_dict("records"),
        lambda run, url: posteval.run_summary(run, database_url=url)["run_id"],
        lambda run, url: posteval.run_health(run, database_url=url),
        lambda run, url: posteval.baseline_for(run, database_url=url),
        lambda run, url: posteval.compare(run, run, database_url=url).candidate_run_id,
    ],
    ids=["run_metrics", "run_summary", "run_health", "baseline_for", "compare"],
)
def test_every_python_api_run_id_takes_the_clis_prefixes(call: object, lineage: Lineage) -> None:
    fn = call  # type: ignore[assignment]
    full = fn(lineage.bad, lineage.url)  # type: ignore[operator]
    assert fn(lineage.bad[:8], lineage.url) == full  # type: ignore[operator]
    typo = "0000dead"
    with pytest.raises(InputError, match=f"no run with id '{typo}'"):
        fn(typo, lineage.url)  # type: ignore[operator]


def test_an_ambiguous_prefix_is_refused_naming_both_runs(db_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"{tag}1".ljust(32, "0"), f"{tag}2".ljust(32, "0")]
    with session_scope(db_url) as session:
        suite = Suite(name=f"s-{tag}", fingerprint=f"s{tag}".ljust(64, "0"), source_text="")
        ckpt = Checkpoint(fingerprint=f"c{tag}".ljust(64, "0"), path="/x", model_name="x")
        session.add_all([suite, ckpt])
        session.flush()
        for i, run_id in enumerate(ids):
            key = f"{tag}{i}".ljust(64, "0")
            run = EvalRun(id=run_id, checkpoint_id=ckpt.id, suite_id=suite.id, model_name="x", trigger="cli")
            run.idempotency_key = key
            session.add(run)
    with pytest.raises(InputError, match=f"run id '{tag}' is ambiguous: it matches {ids[0]}, {ids[1]}"):
        posteval.run_metrics(tag, database_url=db_url)


# -- point 8: the gate's artifacts are readable ---------------------------------------------------------


def _artifacts(key: str) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_the_gate_publishes_a_short_summary_first_and_the_rounded_table_second(lineage: Lineage) -> None:
    [summary] = _artifacts(f"posteval-gate-{lineage.bad[:12]}")
    [table] = _artifacts(f"posteval-comparison-{lineage.bad[:12]}")
    assert (summary.type, table.type) == ("markdown", "table")
    assert summary.created < table.created
    text = str(summary.data)
    base = posteval.run_metrics(lineage.good, database_url=lineage.url).set_index("name")["value"]
    this = posteval.run_metrics(lineage.bad, database_url=lineage.url).set_index("name")["value"]
    assert text.startswith("# ❌ posteval gate: failed\n")
    stored = posteval.run_summary(lineage.bad, database_url=lineage.url)["gate_summary"]
    assert f"**failed**: {stored}" in text
    comparison = posteval.compare(lineage.good, lineage.bad, database_url=lineage.url)
    accuracy = next(r for r in comparison.rows if r.metric == "accuracy")
    expected = (
        f"| ❌ **REGRESSION** | clauses/accuracy | {base['accuracy']:.4f} | {this['accuracy']:.4f} | "
        f"{accuracy.delta:+.4f} | [{accuracy.ci_low:+.4f}, {accuracy.ci_high:+.4f}] | "
        f"{accuracy.p_value:.2g} | fails if drop > 0.02 and p < 0.05 |"
    )
    assert expected in text.splitlines()
    assert "clauses/f1" not in text  # not gated: only in the full table
    report = Path(text.split("Full report: ")[1].split("`")[1])
    assert report.name == f"posteval-report-{lineage.bad[:12]}.html" and report.is_file()
    assert lineage.bad in report.read_text()
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [list(r)[:3] for r in rows] == [["dataset", "metric", "gate"]] * len(rows)
    assert {(r["metric"], r["gate"]) for r in rows} == {("accuracy", "REGRESSION"), ("f1", "-")}
    numbers = [n for r in rows for v in r.values() for n in re.findall(r"[-+]?[\d.]+(?:e[-+]?\d+)?", str(v))]
    # rounded: 0.4444, 1.86e-09 and 0.000999, never 0.4444444444444444 or 1.862645149230957e-09
    assert numbers and all(len(n.lstrip("+-")) <= 8 for n in numbers), numbers
