"""A tiny chat model, fine-tuned on clauses as chat turns, evaluated through the flow with its template.

The rendered prompts are checked against transformers' apply_chat_template called directly, and the
model must score better with its template than without (an exact McNemar test on the paired per-example
correctness, scipy's binomial test on the discordant pairs, p < 0.05; every step is seeded).
"""

from __future__ import annotations

import html
import json
import random
from pathlib import Path

import pytest
from scipy.stats import binomtest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from transformers import AutoTokenizer

from posteval.db.models import Checkpoint, Dataset, EvalRun, ExampleScore, Metric, Prediction
from posteval.flows.post_training import evaluate_checkpoint
from posteval.toymodel import CHAT_TEMPLATE, EXAMPLES_DIR, LABELS, PROMPT_TEMPLATE
from posteval.views.report import WORST, render_report

SUITE = """\
name: {name}
allow_incomplete: true
bos: always
chat: {chat}
system: "Classify the clause."
generation: {{max_new_tokens: 4, stop: ["<|end|>", "\\n"], batch_size: 8}}
datasets:
  - name: clauses
    path: {heldout}
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    scoring: loglikelihood
    key: id
    fewshot: {{n: 1, from: {shots}, seed: 3}}
    metrics: [accuracy]
"""


@pytest.fixture(scope="module")
def chat_checkpoint(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from posteval.toymodel import finetune_chat

    return finetune_chat(base_checkpoint, tmp_path_factory.mktemp("models") / "contracts-chat")


def _suite(folder: Path, name: str, chat: str) -> Path:
    path = folder / f"{name}.yaml"
    heldout, shots = EXAMPLES_DIR / "heldout.jsonl", EXAMPLES_DIR / "validation.jsonl"
    path.write_text(SUITE.format(name=name, chat=chat, heldout=heldout, shots=shots))
    return path


def _scores(session: Session, run_id: str) -> dict[str, float]:
    rows = session.scalars(select(ExampleScore).filter_by(run_id=run_id, metric="accuracy")).all()
    return {row.example_key: float(row.value or 0.0) for row in rows}


def _prompts(session: Session, run_id: str) -> dict[str, str]:
    run = session.get_one(EvalRun, run_id)
    checkpoint = session.get_one(Checkpoint, run.checkpoint_id)
    metric = session.scalars(select(Metric).filter_by(run_id=run_id)).first()
    assert metric is not None
    dataset = session.get_one(Dataset, metric.dataset_id)
    assert run.output_settings is not None
    predictions = session.scalars(
        select(Prediction).filter_by(
            checkpoint_fingerprint=checkpoint.fingerprint,
            dataset_fingerprint=dataset.fingerprint,
            config_hash=run.output_settings["datasets"]["clauses"]["config_hash"],
        )
    ).all()
    return {p.example_key: p.extra["prompt"] for p in predictions if "prompt" in p.extra}


def test_chat_model_scores_better_with_its_template_and_prompts_match_apply_chat_template(
    prefect_harness: None, chat_checkpoint: Path, tmp_path: Path, sqlite_url: str
) -> None:
    chat_run = evaluate_checkpoint(
        checkpoint=str(chat_checkpoint),
        suite=str(_suite(tmp_path, "chat-on", "true")),
        database_url=sqlite_url,
    )
    plain_run = evaluate_checkpoint(
        checkpoint=str(chat_checkpoint),
        suite=str(_suite(tmp_path, "chat-off", "false")),
        database_url=sqlite_url,
    )
    heldout = [json.loads(line) for line in (EXAMPLES_DIR / "heldout.jsonl").read_text().splitlines()]
    shots = [json.loads(line) for line in (EXAMPLES_DIR / "validation.jsonl").read_text().splitlines()]
    shot = shots[random.Random(3).sample(range(len(shots)), 1)[0]]
    tokenizer = AutoTokenizer.from_pretrained(chat_checkpoint)
    assert tokenizer.chat_template == CHAT_TEMPLATE  # the template travels in the tokenizer config

    with Session(create_engine(sqlite_url)) as session:
        chat_prompts = _prompts(session, chat_run)
        plain_prompts = _prompts(session, plain_run)
        chat_scores, plain_scores = _scores(session, chat_run), _scores(session, plain_run)

    for row in heldout:
        expected = tokenizer.apply_chat_template(
            [
                {"role": "system", "content": "Classify the clause."},
                {"role": "user", "content": PROMPT_TEMPLATE.format(text=shot["text"])},
                {"role": "assistant", "content": shot["label"]},
                {"role": "user", "content": PROMPT_TEMPLATE.format(text=row["text"])},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert chat_prompts[row["id"]] == expected
        assert plain_prompts[row["id"]] == (
            PROMPT_TEMPLATE.format(text=shot["text"])
            + " "
            + shot["label"]
            + "\n\n"
            + PROMPT_TEMPLATE.format(text=row["text"])
        )
    assert set(chat_scores) == set(plain_scores) == {row["id"] for row in heldout}
    assert {row["label"] for row in heldout} <= set(LABELS)

    # The report shows each worst example's input as the model saw it: system turn, shot and template.
    chat_html = render_report(chat_run, database_url=sqlite_url)
    assert chat_html.count(html.escape("<|endoftext|><|system|>\nClassify the clause.")) == WORST
    assert html.escape("<|system|>") not in render_report(plain_run, database_url=sqlite_url)

    only_chat = sum(1 for k in chat_scores if chat_scores[k] == 1.0 and plain_scores[k] == 0.0)
    only_plain = sum(1 for k in chat_scores if chat_scores[k] == 0.0 and plain_scores[k] == 1.0)
    assert sum(chat_scores.values()) > sum(plain_scores.values())
    assert binomtest(only_chat, only_chat + only_plain, 0.5, alternative="greater").pvalue < 0.05
