"""Multiple choice by loglikelihood, perplexity datasets, and crash-resume through the flow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from posteval.db.models import EvalRun, Metric, Prediction
from posteval.flows.post_training import evaluate_checkpoint
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.runners.hf import HFRunner
from tests.helpers import heldout_rows, write_jsonl

GENERAL = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "general.jsonl"

MODES_SUITE = """\
name: modes
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {batch_size: 4}
datasets:
  - name: choice
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    scoring: loglikelihood
    metrics: [accuracy]
  - name: general
    path: general.jsonl
    kind: perplexity
    metrics: [perplexity, bits_per_byte]
"""

RESUME_SUITE = """\
name: resume
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 4, batch_size: 4}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    metrics: [accuracy]
"""


def _metrics(session: Session, run_id: str) -> dict[str, float]:
    return {m.name: m.value for m in session.scalars(select(Metric).filter_by(run_id=run_id))}


def test_multiple_choice_and_perplexity_datasets(
    prefect_harness: None, finetuned_checkpoint: Path, tmp_path: Path, db_url: str
) -> None:
    rows = heldout_rows(9)
    write_jsonl(tmp_path / "clauses.jsonl", rows)
    (tmp_path / "general.jsonl").write_text("".join(GENERAL.read_text().splitlines(keepends=True)[:8]))
    (tmp_path / "suite.yaml").write_text(MODES_SUITE)
    run_id = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(tmp_path / "suite.yaml"), database_url=db_url
    )
    engine = create_engine(db_url)
    with Session(engine) as session:
        run = session.get_one(EvalRun, run_id)
        assert run.status == "succeeded"
        stored = session.scalars(select(Prediction).order_by(Prediction.id)).all()
        choices = [p for p in stored if p.output is not None]
        texts = [p for p in stored if p.output is None]
        by_key = {p.example_key: p for p in choices}
        picked = [by_key[str(i)] for i in range(len(rows))]
        for prediction in picked:
            logprobs = prediction.extra["logprobs"]
            assert prediction.output == max(logprobs, key=logprobs.get)
        # Each example's stored scores are the runner's for that example's own prompt, label by label.
        runner = HFRunner(resolve_checkpoint(finetuned_checkpoint))
        labels = ["lease", "nda", "employment"]
        requests = [(f"Clause: {row['text']}\nType:", f" {label}") for row in rows[:3] for label in labels]
        direct = {
            i: r.logprob
            for indices, results in runner.loglikelihood(requests)
            for i, r in zip(indices, results, strict=True)
        }
        for example in range(3):
            stored_scores = picked[example].extra["logprobs"]
            for j, label in enumerate(labels):
                assert stored_scores[label] == pytest.approx(direct[example * 3 + j], rel=1e-4, abs=1e-4)
        expected_accuracy = sum(p.output == r["label"] for p, r in zip(picked, rows, strict=True)) / len(rows)
        nll = -sum(p.extra["logprob"] for p in texts)
        n_tokens = sum(p.extra["n_tokens"] for p in texts)
        n_bytes = sum(p.extra["n_bytes"] for p in texts)
        assert len(texts) == 8
        assert _metrics(session, run_id) == pytest.approx(
            {
                "accuracy": expected_accuracy,
                "perplexity": math.exp(nll / n_tokens),
                "bits_per_byte": nll / n_bytes / math.log(2),
            }
        )
    engine.dispose()


def test_a_killed_run_resumes_after_the_last_stored_batch(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_jsonl(tmp_path / "clauses.jsonl", heldout_rows(12))
    (tmp_path / "suite.yaml").write_text(RESUME_SUITE)
    original = HFRunner._generate_batch
    calls: list[int] = []

    def dies_on_second_batch(self: HFRunner, prompts: list[str], *args: object) -> list[str]:
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt("worker killed")
        return original(self, prompts, *args)

    monkeypatch.setattr(HFRunner, "_generate_batch", dies_on_second_batch)
    args = {
        "checkpoint": str(finetuned_checkpoint),
        "suite": str(tmp_path / "suite.yaml"),
        "database_url": sqlite_url,
    }
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoint(**args)
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        run = session.scalars(select(EvalRun).order_by(EvalRun.created_at.desc())).first()
        assert run is not None and run.status == "failed"
    engine.dispose()

    calls.clear()
    monkeypatch.setattr(
        HFRunner, "_generate_batch", lambda self, p, *a: calls.append(len(p)) or original(self, p, *a)
    )
    run_id = evaluate_checkpoint(**args)
    assert calls == [4, 4]  # the first stored batch of 4 was not generated again
    assert run_id == run.id  # the failed run is retried in place

    calls.clear()
    assert evaluate_checkpoint(**args) == run_id
    assert calls == []
