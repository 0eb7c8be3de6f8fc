"""LLM judges through the flow: a local transformers judge (the tiny base model: its scores are
meaningless, that it runs, stores and compares is the point) and a scripted API judge whose key must
never reach the database, a log or the report, and whose answers a re-run reads back from the cache."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from posteval.db import queries
from posteval.db.judgments import JUDGE_CONFIG
from posteval.flows.post_training import evaluate_checkpoint
from posteval.views.report import render_report
from tests.helpers import heldout_rows, write_jsonl
from tests.judge_server import JudgeServer, Reply

SUITE = """\
name: judged-{name}
allow_incomplete: true
base_model: {base}
generation: {{max_new_tokens: 6, batch_size: 4}}
bootstrap_resamples: 50
datasets:
  - name: summaries
    path: clauses.jsonl
    prompt: "Clause: {{text}}\\nType:"
    general: true
    judge:
      model: {judge}
      {key}
      rubric: {{criteria: [helpful, correct], scale: [1, 2, 3]}}
      pairwise: {{}}
    metrics: [judge_score, judge_parse_failure_rate, win_rate, tie_rate, loss_rate,
              judge_position_inconsistency]
"""
JUDGED = {
    "judge_score",
    "judge_parse_failure_rate",
    "win_rate",
    "tie_rate",
    "loss_rate",
    "judge_position_inconsistency",
}


def _suite(folder: Path, name: str, base: Path, judge: str, key: str = "") -> Path:
    write_jsonl(folder / "clauses.jsonl", heldout_rows(4))
    path = folder / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, base=base, judge=judge, key=key))
    return path


def _judge_rows(url: str) -> int:
    with create_engine(url).connect() as connection:
        query = text("SELECT count(*) FROM predictions WHERE config_hash = :c")
        return int(connection.execute(query, {"c": JUDGE_CONFIG}).scalar_one())


def test_a_local_judge_scores_and_compares_with_the_base_through_the_flow(
    prefect_harness: None, base_checkpoint: Path, finetuned_checkpoint: Path, tmp_path: Path
) -> None:
    # A database of its own: the session's shared one holds other tests' verdicts, which would be counted
    # below (or answer from the cache what this test means to ask).
    from posteval.db.migrate import upgrade

    sqlite_url = f"sqlite:///{tmp_path / 'judged.db'}"
    upgrade(sqlite_url)
    suite = _suite(tmp_path, "local", base_checkpoint, str(base_checkpoint))
    run_id = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(suite), database_url=sqlite_url
    )
    metrics = queries.run_metrics(run_id, database_url=sqlite_url).set_index("name")
    assert set(metrics.index) == JUDGED
    assert metrics.loc["judge_parse_failure_rate", "value"] == 0.0  # a likelihood judge always parses
    score = float(metrics.loc["judge_score", "value"])
    assert 1.0 <= score <= 3.0 and (score * 8).is_integer()  # 4 examples x 2 criteria, each a point 1..3
    shares = [metrics.loc[name, "value"] for name in ("tie_rate", "loss_rate")]
    wins = metrics.loc["win_rate", "value"]
    assert 0.0 <= wins <= 1.0 and all(0.0 <= share <= 1.0 for share in shares)
    assert metrics.loc["win_rate", "n"] == 4
    stored = _judge_rows(sqlite_url)
    # Per example: the fine-tune's and the base's answers scored (general: forgetting), two pair orders.
    assert stored == 2 * 4 + 2 * 4
    # Judging the same answers again asks nothing: every verdict comes from the cache.
    again = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(suite), database_url=sqlite_url, force=True
    )
    assert _judge_rows(sqlite_url) == stored
    repeated = queries.run_metrics(again, database_url=sqlite_url).set_index("name")
    assert repeated["value"].to_dict() == metrics["value"].to_dict()


def _scripted(body: Any) -> Reply:
    prompt = body["messages"][-1]["content"]
    if "[Answer A]" in prompt:
        return Reply(json.dumps({"winner": "A", "rationale": "A reads better"}))
    scores = {c: {"score": 3, "rationale": f"{c}: fine"} for c in ("helpful", "correct")}
    return Reply(json.dumps(scores))


def test_an_api_judges_key_never_reaches_the_database_the_log_or_the_report(
    prefect_harness: None,
    base_checkpoint: Path,
    finetuned_checkpoint: Path,
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-judge-flow-5ecr3t-abcdef"
    monkeypatch.setenv("POSTEVAL_TEST_FLOW_JUDGE_KEY", secret)
    with JudgeServer(_scripted) as server, caplog.at_level(logging.DEBUG):
        suite = _suite(
            tmp_path,
            "api",
            base_checkpoint,
            f"openai:judge@{server.base_url}",
            "api_key_env: POSTEVAL_TEST_FLOW_JUDGE_KEY",
        )
        run_id = evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint), suite=str(suite), database_url=sqlite_url
        )
        asked = len(server.requests)
        assert asked == 2 * 4 + 2 * 4
        assert all(r.headers["authorization"] == f"Bearer {secret}" for r in server.requests)
        evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint), suite=str(suite), database_url=sqlite_url, force=True
        )
        assert len(server.requests) == asked  # the re-run made no call
    metrics = queries.run_metrics(run_id, database_url=sqlite_url).set_index("name")
    assert metrics.loc["judge_score", "value"] == 3.0
    assert metrics.loc["win_rate", "value"] == 0.5  # always "A": each pair's orders disagree
    assert metrics.loc["judge_position_inconsistency", "value"] == 1.0
    report = render_report(run_id, database_url=sqlite_url)
    assert "A reads better" in report and "helpful: fine" in report  # each rationale can be opened
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    dump = subprocess.run(["sqlite3", str(database), ".dump"], capture_output=True, text=True, check=False)
    raw_bytes = database.read_bytes()
    assert secret.encode() not in raw_bytes
    assert secret not in dump.stdout
    assert secret not in caplog.text
    assert secret not in report
