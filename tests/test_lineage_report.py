"""`posteval report --model M --suite S`: a model's whole history on a suite in one page, and which checkpoint
to ship: the best on the suite's primary metric, every other checkpoint tested against it (paired)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from scipy.stats import binomtest
from typer.testing import CliRunner

from posteval.cli import app
from posteval.db import queries, reads
from posteval.db.engine import session_scope
from posteval.errors import GateFailed, SuiteError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.hashing import sha256_json
from posteval.inputs.suite import Suite, parse_suite
from posteval.judging.ship import primary_metric
from posteval.settings import get_settings
from tests.helpers import heldout_rows, write_jsonl
from tests.test_report import Page, chromium, open_in_chromium, section

__all__ = ["chromium"]  # the fixture, imported for the Chromium test

GENERAL = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "general.jsonl"
SUITE = """\
name: ship
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {{max_new_tokens: 4, batch_size: 16}}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    labels: [lease, nda, employment]
    metrics: [{{f1: {{average: macro}}}}, accuracy]
  - name: general-text
    path: {general}
    kind: perplexity
    key: id
    limit: 6
    metrics: [perplexity]
primary: clauses/accuracy
gates:
  clauses/f1: {{max_drop: 0.02, alpha: 0.05}}
"""


@dataclass(frozen=True)
class History:
    url: str
    suite: Path
    runs: list[str]  # base (no step), fine-tune, overfit: lineage order
    page: str


@pytest.fixture(scope="module")
def history(
    prefect_harness: None,
    base_checkpoint: Path,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> History:
    folder = tmp_path_factory.mktemp("ship")
    url = f"sqlite:///{folder / 'ship.db'}"
    from posteval.db.migrate import upgrade

    upgrade(url)
    write_jsonl(folder / "clauses.jsonl", heldout_rows(54))
    suite = folder / "ship.yaml"
    suite.write_text(SUITE.format(general=GENERAL))
    runs = []
    # Evaluated out of step order: the report orders by training step, not by when a run happened.
    for checkpoint in (overfit_checkpoint, base_checkpoint, finetuned_checkpoint):
        try:
            runs.append(
                evaluate_checkpoint(
                    checkpoint=str(checkpoint), suite=str(suite), model_name="ship", database_url=url
                )
            )
        except GateFailed as failed:
            runs.append(failed.run_id)
    overfit, base, tuned = runs
    from posteval.views.lineage_report import render_lineage_report

    page = render_lineage_report("ship", "ship", database_url=url)
    return History(url, suite, [base, tuned, overfit], page)


def _accuracy(run: str, url: str) -> float:
    frame = queries.run_metrics(run, database_url=url)
    return float(frame[(frame["dataset"] == "clauses") & (frame["name"] == "accuracy")]["value"].iloc[0])


def _mcnemar_p(best: str, other: str, url: str) -> float:
    """The exact McNemar test on the two runs' per-example accuracy, by scipy (not posteval)."""
    with session_scope(url) as session:
        a, b = (
            {k: v for _, _, k, v in reads.example_scores(session, run, dataset="clauses", metric="accuracy")}
            for run in (best, other)
        )
    lost = sum(1 for k in a if a[k] == 1 and b[k] == 0)
    gained = sum(1 for k in a if a[k] == 0 and b[k] == 1)
    return 1.0 if lost + gained == 0 else float(binomtest(lost, lost + gained, 0.5).pvalue)


def test_every_checkpoint_in_step_order_with_metrics_and_cis(history: History) -> None:
    page = Page(section(history.page, "checkpoints"))
    [table] = page.tables
    assert table[0] == [
        "step", "run", "checkpoint", "gate", "clauses/f1", "clauses/accuracy", "general-text/perplexity",
    ]  # fmt: skip
    assert [row[1] for row in table[1:]] == [run[:12] for run in history.runs]
    steps = [queries.run_summary(run, database_url=history.url)["step"] for run in history.runs]
    assert steps[0] is None and 0 < steps[1] < steps[2]  # type: ignore[operator]
    assert [row[0] for row in table[1:]] == ["-", str(steps[1]), str(steps[2])]
    for row, run in zip(table[1:], history.runs, strict=True):
        metrics = queries.run_metrics(run, database_url=history.url)
        for cell, metric in zip(row[4:], metrics.itertuples(index=False), strict=True):
            assert cell == f"{metric.value:.4f} [{metric.ci_low:.4f}, {metric.ci_high:.4f}]"


def test_the_checkpoint_to_ship_is_the_best_on_the_primary_with_paired_tests(history: History) -> None:
    accuracy = [_accuracy(run, history.url) for run in history.runs]
    best = history.runs[accuracy.index(max(accuracy))]  # ties: the earlier checkpoint
    page = Page(section(history.page, "ship"))
    [table] = page.tables
    assert table[0] == [
        "step", "run", "checkpoint", "clauses/accuracy", "vs best", "95% CI", "p", "test", "verdict",
    ]  # fmt: skip
    by_run = {row[1]: row for row in table[1:]}
    assert by_run[best[:12]][4:] == ["-", "-", "-", "-", "ship this"]
    summary = queries.run_summary(best, database_url=history.url)
    step = "-" if summary["step"] is None else summary["step"]
    assert f"Ship step {step}: {summary['checkpoint']}" in history.page
    for run, value in zip(history.runs, accuracy, strict=True):
        if run == best:
            continue
        row = by_run[run[:12]]
        p = _mcnemar_p(best, run, history.url)
        assert row[4] == f"{value - max(accuracy):+.4f}"
        assert (row[6], row[7]) == (f"{p:.3g}", "mcnemar_exact")
        assert row[8] == ("significantly worse" if p < 0.05 else "no significant difference")


def test_trend_charts_one_per_metric_with_a_log_axis_for_perplexity(history: History) -> None:
    images = [attrs for tag, attrs in Page(section(history.page, "trends")).tags if tag == "img"]
    assert [image["alt"] for image in images] == [
        "f1 of ship", "accuracy of ship", "perplexity of ship (log scale)",
    ]  # fmt: skip
    assert all(str(image["src"]).startswith("data:image/png;base64,iVBORw0KGgo") for image in images)


def test_gate_verdicts_are_shown_per_checkpoint(history: History) -> None:
    [table] = Page(section(history.page, "gates")).tables
    stored = [queries.run_summary(run, database_url=history.url) for run in history.runs]
    assert [row[2] for row in table[1:]] == [s["gate_status"] for s in stored]
    assert [row[3] for row in table[1:]] == [s["gate_summary"] for s in stored]


def test_chromium_shows_the_lineage_page_without_console_messages(
    history: History, chromium: str, tmp_path: Path
) -> None:
    written = tmp_path / "lineage.html"
    written.write_text(history.page)
    dom, console = open_in_chromium(chromium, written, tmp_path / "profile")
    assert console == []
    page = Page(dom)
    assert {"ship-table", "checkpoint-table", "gate-table"} <= set(page.table_ids)
    assert not [tag for tag, _ in page.tags if tag == "script"]


def test_the_cli_writes_it_without_importing_the_model_stack(history: History, tmp_path: Path) -> None:
    out = tmp_path / "lineage.html"
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from posteval.cli import app\n"
        f"result = CliRunner().invoke(app, ['report', '--model', 'ship', '--suite', {str(history.suite)!r},"
        f" '--out', {str(out)!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'sklearn') if m in sys.modules))\n"
    )
    env = {"POSTEVAL_DATABASE_URL": history.url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert '<section id="ship">' in out.read_text()


def test_report_needs_both_model_and_suite(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", history.url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        alone = runner.invoke(app, ["report", "--model", "ship"])
        assert (alone.exit_code, alone.output.strip()) == (
            2,
            "error: --suite is missing: a lineage is one model on one suite",
        )
        unknown = runner.invoke(app, ["report", "--model", "nobody", "--suite", "ship"])
        assert unknown.exit_code == 2
        assert "no succeeded run of model 'nobody' on suite 'ship'" in unknown.output
    finally:
        get_settings.cache_clear()


PRIMARY_SUITE = """\
name: p
allow_incomplete: true
datasets:
  - {{name: qa, path: qa.jsonl, prompt: "{{q}}", reference: a, labels: [y, n],
     metrics: [exact_match, accuracy]}}
  - {{name: gen, path: g.jsonl, kind: perplexity, metrics: [perplexity]}}
{extra}
"""


STORED = [("gen", "perplexity"), ("qa", "exact_match"), ("qa", "accuracy")]  # a run's metric rows


def test_primary_defaults_to_the_first_gated_then_the_first_task_metric(tmp_path: Path) -> None:
    def primary(extra: str) -> tuple[str | None, str]:
        source = PRIMARY_SUITE.format(extra=extra)
        parse_suite(source, tmp_path / "p.yaml")  # a valid suite
        return primary_metric(source, STORED)

    assert primary("primary: gen/perplexity") == ("gen/perplexity", "the suite's primary")
    assert primary("gates: {qa/accuracy: {max_drop: 0.1}}") == (
        "qa/accuracy",
        "the suite's first gated metric (no primary: set)",
    )
    assert primary("") == ("qa/exact_match", "the suite's first task metric (no primary: or gates: set)")


def test_an_unknown_primary_is_refused_naming_the_file_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as refused:
        parse_suite(PRIMARY_SUITE.format(extra="primary: qa/acuracy"), tmp_path / "p.yaml")
    assert str(refused.value) == (
        f"{tmp_path / 'p.yaml'}: primary: 'qa/acuracy' is no DATASET/METRIC of the suite. "
        "Did you mean 'qa/accuracy'? Expected one of qa/exact_match, qa/accuracy, qa/human_score, "
        "qa/human_win_rate, gen/perplexity"
    )


def test_a_suite_without_primary_keeps_its_fingerprint(tmp_path: Path) -> None:
    """Suites written before the key existed map to the same runs as before it."""
    text = PRIMARY_SUITE.format(extra="")
    _, fingerprint = parse_suite(text, tmp_path / "p.yaml")
    _, with_primary = parse_suite(text + "primary: qa/accuracy\n", tmp_path / "p.yaml")
    assert fingerprint != with_primary
    content = Suite.model_validate(yaml.safe_load(text)).model_dump(mode="json")
    del content["primary"]  # what the fingerprint covered before the key existed
    assert fingerprint == sha256_json(content)
