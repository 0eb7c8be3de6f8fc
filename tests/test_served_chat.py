"""Chat on a served model: generation through /v1/chat/completions (the server renders its template);
loglikelihood rendered on the client from the suite's ``tokenizer:`` folder and scored through
/v1/completions, equal to the local checkpoint; refused without that folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from posteval.db.engine import session_scope
from posteval.db.repo import cached_outputs
from posteval.errors import InputError
from posteval.pipeline import config_hash, run_model
from posteval.pipeline.resolve import resolve
from posteval.toymodel import CHAT_TEMPLATE
from tests.helpers import heldout_rows, write_jsonl
from tests.openai_server import OpenAIServer

SUITE = """\
name: served-chat
allow_incomplete: true
chat: true
system: "Classify the clause."
{tokenizer}
generation: {{max_new_tokens: 3, stop: ["<|end|>", "\\n"], batch_size: 4}}
datasets:
  - name: clauses
    path: items.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    {scoring}
    metrics: [{metric}]
"""
CHOICE = "labels: [lease, nda, employment]\n    scoring: loglikelihood"


@pytest.fixture(scope="module")
def chat_model(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served-chat") / "model"
    shutil.copytree(base_checkpoint, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(chat_model: Path) -> Iterator[OpenAIServer]:
    with OpenAIServer(chat_model, model_name="chat-toy") as served:
        yield served


def _suite(folder: Path, scoring: str = "", tokenizer: Path | None = None) -> Path:
    write_jsonl(folder / "items.jsonl", heldout_rows(5))
    path = folder / "suite.yaml"
    path.write_text(
        SUITE.format(
            scoring=scoring,
            tokenizer=f"tokenizer: {tokenizer}" if tokenizer else "",
            metric="accuracy" if scoring else "exact_match",
        )
    )
    return path


def _outputs(checkpoint: str, suite: Path, url: str) -> dict[str, tuple[str | None, dict[str, Any]]]:
    resolved = resolve(checkpoint, str(suite))
    dataset = resolved.datasets[0]
    run_model(resolved.checkpoint, resolved.suite.suite, dataset, database_url=url)
    chash = config_hash(resolved.suite.suite, dataset.spec, resolved.checkpoint)
    with session_scope(url) as session:
        stored = cached_outputs(session, resolved.checkpoint.fingerprint, dataset.fingerprint, chash)
    return {key: (value.output, value.extra) for key, value in stored.items()}


def test_served_chat_generation_goes_through_chat_completions_and_equals_the_local_model(
    chat_model: Path, server: OpenAIServer, tmp_path: Path, sqlite_url: str
) -> None:
    server.reset()
    suite = _suite(tmp_path)
    served = _outputs(f"openai:chat-toy@{server.base_url}", suite, sqlite_url)
    local = _outputs(str(chat_model), suite, sqlite_url)
    assert {key: out for key, (out, _) in served.items()} == {key: out for key, (out, _) in local.items()}
    chats = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 5 and not [r for r in server.requests if r.path == "/v1/completions"]
    first = heldout_rows(1)[0]
    assert chats[0].body["messages"] == [
        {"role": "system", "content": "Classify the clause."},
        {"role": "user", "content": f"Clause: {first['text']}\nType:"},
    ]


def test_served_chat_loglikelihood_renders_with_the_suites_tokenizer_and_equals_the_local_model(
    chat_model: Path, server: OpenAIServer, tmp_path: Path, sqlite_url: str
) -> None:
    server.reset()
    suite = _suite(tmp_path, CHOICE, tokenizer=chat_model)
    served = _outputs(f"openai:chat-toy@{server.base_url}", suite, sqlite_url)
    local = _outputs(str(chat_model), suite, sqlite_url)
    assert set(served) == set(local)
    for key, (output, extra) in served.items():
        assert output == local[key][0]
        assert extra["prompt"] == local[key][1]["prompt"]
        for choice, logprob in extra["logprobs"].items():
            assert logprob == pytest.approx(local[key][1]["logprobs"][choice], abs=1e-4)
    assert {r.path for r in server.requests} == {"/v1/completions"}


def test_served_chat_loglikelihood_without_a_tokenizer_folder_is_refused_before_any_model_call(
    server: OpenAIServer, tmp_path: Path
) -> None:
    server.reset()
    with pytest.raises(InputError, match="needs a 'tokenizer:' folder in the suite"):
        resolve(f"openai:chat-toy@{server.base_url}", str(_suite(tmp_path, CHOICE)))
    assert server.requests == []
