"""Pairwise judging against a named run (``against: RUN_ID``) through the flow: the other side's answers are
that run's stored outputs for the same dataset, read back (never generated again); a run that is unknown,
has no outputs for the dataset, or does not cover every example is refused naming the run and dataset,
before a run row exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from posteval.db import queries
from posteval.errors import InputError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.views.report_data import load_run
from tests.helpers import heldout_rows, write_jsonl
from tests.judge_server import JudgeServer, Reply

SUITE = """\
name: against-{name}
allow_incomplete: true
generation: {{max_new_tokens: 6, batch_size: 4}}
bootstrap_resamples: 50
datasets:
  - name: {dataset}
    path: clauses.jsonl
    prompt: "Clause: {{text}}\\nType:"
    judge:
      model: openai:judge@{url}
      api_key_env: POSTEVAL_TEST_AGAINST_KEY
      {section}
    metrics: [{metrics}]
"""
RUBRIC = ("rubric: {criteria: [helpful], scale: [1, 2, 3]}", "judge_score")
PAIRWISE_METRICS = "win_rate, tie_rate, loss_rate, judge_position_inconsistency"
PAIR = re.compile(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\n", re.DOTALL)


def _scripted(body: Any) -> Reply:
    prompt = body["messages"][-1]["content"]
    if "[Answer A]" in prompt:
        return Reply(json.dumps({"winner": "A", "rationale": "the first reads better"}))
    return Reply(json.dumps({"helpful": {"score": 2, "rationale": "fine"}}))


def _suite(folder: Path, name: str, url: str, section: str, metrics: str, dataset: str = "summaries") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, dataset=dataset, url=url, section=section, metrics=metrics))
    return path


def _against(folder: Path, name: str, url: str, run: str, dataset: str = "summaries") -> Path:
    return _suite(folder, name, url, f"pairwise: {{against: '{run}'}}", PAIRWISE_METRICS, dataset)


def test_pairs_are_judged_against_a_named_runs_stored_outputs_and_bad_runs_are_refused(
    prefect_harness: None,
    base_checkpoint: Path,
    finetuned_checkpoint: Path,
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POSTEVAL_TEST_AGAINST_KEY", "sk-against-test")
    write_jsonl(tmp_path / "clauses.jsonl", heldout_rows(4))
    with JudgeServer(_scripted) as server:
        url = server.base_url
        first = evaluate_checkpoint(
            checkpoint=str(base_checkpoint),
            suite=str(_suite(tmp_path, "a", url, *RUBRIC)),
            database_url=sqlite_url,
        )
        asked = len(server.requests)
        second = evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint),
            suite=str(_against(tmp_path, "b", url, first[:8])),
            database_url=sqlite_url,
        )
        pairs = [PAIR.search(r.body["messages"][-1]["content"]) for r in server.requests[asked:]]
    theirs, _ = load_run(first, sqlite_url).outputs("summaries")
    ours, _ = load_run(second, sqlite_url).outputs("summaries")
    assert len(theirs) == len(ours) == 4
    assert any(theirs[key] != ours[key] for key in ours)  # the two checkpoints answer differently
    # Every judged pair is the evaluated answer and the named run's stored answer, in both orders.
    expected = {(o, t) for key in ours for o, t in ((ours[key], theirs[key]), (theirs[key], ours[key]))}
    assert all(match is not None for match in pairs)
    assert {(m.group(1), m.group(2)) for m in pairs if m is not None} == expected
    metrics = queries.run_metrics(second, database_url=sqlite_url).set_index("name")
    assert set(metrics.index) == {"win_rate", "tie_rate", "loss_rate", "judge_position_inconsistency"}
    assert metrics.loc["win_rate", "n"] == 4
    # Always "A": where the answers differ the orders disagree (a tie); where equal, both orders agree.
    same = sum(theirs[key] == ours[key] for key in ours)
    assert metrics.loc["tie_rate", "value"] == (4 - same) / 4
    assert metrics.loc["win_rate", "value"] == (same + (4 - same) / 2) / 4
    assert metrics.loc["loss_rate", "value"] == 0.0
    stored = _provenance(sqlite_url, second, "win_rate")
    assert stored["against"] == first  # the named run's full id, not the prefix written in the suite
    registered = len(queries.runs(database_url=sqlite_url))

    with pytest.raises(
        InputError, match=r"dataset 'summaries': pairwise judging against run 'ffffffff': no run"
    ):
        evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint),
            suite=str(_against(tmp_path, "unknown", "http://127.0.0.1:9", "ffffffff")),
            database_url=sqlite_url,
        )
    with pytest.raises(InputError, match=rf"dataset 'advice': run {first[:12]} .* has no outputs"):
        evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint),
            suite=str(_against(tmp_path, "other", "http://127.0.0.1:9", first[:8], "advice")),
            database_url=sqlite_url,
        )
    key = sorted(theirs)[0]
    with create_engine(sqlite_url).begin() as connection:
        fingerprint = str(load_run(first, sqlite_url).checkpoint.fingerprint)
        connection.execute(
            text("DELETE FROM predictions WHERE checkpoint_fingerprint = :f AND example_key = :k"),
            {"f": fingerprint, "k": key},
        )
    with pytest.raises(InputError, match=rf"dataset 'summaries': run {first[:12]} .* outputs for 3 of its 4"):
        evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint),
            suite=str(_against(tmp_path, "b", "http://127.0.0.1:9", first[:8])),
            database_url=sqlite_url,
            force=True,
        )

    # Each refused before a run was registered: no run row for any of them.
    assert len(queries.runs(database_url=sqlite_url)) == registered


def _provenance(url: str, run_id: str, metric: str) -> dict[str, Any]:
    with create_engine(url).connect() as connection:
        query = text("SELECT details FROM metrics WHERE run_id = :r AND name = :m")
        details = connection.execute(query, {"r": run_id, "m": metric}).scalar_one()
    loaded = json.loads(details) if isinstance(details, str) else details
    return dict(loaded["provenance"])
