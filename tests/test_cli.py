"""The `posteval` command: user errors are one line and exit 2; listings come as tables, JSON or CSV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from posteval.cli import app
from posteval.settings import get_settings
from tests.helpers import heldout_rows, write_jsonl

SUITE = """\
name: cli
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 6, stop: ["\\n"], batch_size: 8}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    metrics: [accuracy]
"""


def _posteval(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POSTEVAL_HOME": str(home)}
    env.pop("POSTEVAL_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "posteval.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    result = _posteval("evaluate", str(tmp_path / "absent"), "--suite", str(suite), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint folder not found: {tmp_path / 'absent'}"
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_suite_is_one_line_and_exit_2(tmp_path: Path, finetuned_checkpoint: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("metrics: [accuracy]", "metrics: [acuracy]"))
    result = _posteval("evaluate", str(finetuned_checkpoint), "--suite", str(suite), home=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: {suite}: datasets[0].metrics[0]: unknown metric 'acuracy'. Did you mean 'accuracy'?"
    )


@pytest.fixture
def cli_db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    yield sqlite_url
    get_settings.cache_clear()


def test_evaluate_then_list_and_show_as_json(
    prefect_harness: None, finetuned_checkpoint: Path, tmp_path: Path, cli_db: str
) -> None:
    write_jsonl(tmp_path / "clauses.jsonl", heldout_rows(6))
    (tmp_path / "suite.yaml").write_text(SUITE)
    runner = CliRunner()
    evaluated = runner.invoke(
        app,
        ["evaluate", str(finetuned_checkpoint), "--suite", str(tmp_path / "suite.yaml"), "--format", "json"],
    )
    assert evaluated.exit_code == 0, evaluated.output
    shown = json.loads(evaluated.stdout)
    assert shown["status"] == "succeeded"
    assert [(m["dataset"], m["name"], m["n"]) for m in shown["metrics"]] == [("clauses", "accuracy", 6)]

    listed = runner.invoke(app, ["runs", "list", "--suite", "cli", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.stdout)
    assert [r["run_id"] for r in runs] == [shown["run_id"]]

    again = runner.invoke(app, ["runs", "show", shown["run_id"][:8], "--format", "json"])
    assert json.loads(again.stdout)["metrics"] == shown["metrics"]

    report = runner.invoke(app, ["report", shown["run_id"][:8], "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    assert 'id="metric-table"' in (tmp_path / "r.html").read_text()

    table = runner.invoke(app, ["runs", "show", shown["run_id"][:8]])
    assert "accuracy" in table.stdout and shown["run_id"] in table.stdout


def test_unknown_run_id_exits_2(cli_db: str) -> None:
    result = CliRunner().invoke(app, ["runs", "show", "ffffffff"])
    assert result.exit_code == 2
    assert "no run with id 'ffffffff'" in result.stderr
