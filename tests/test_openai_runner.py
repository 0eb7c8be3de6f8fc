"""The openai runner against a local OpenAI-compatible server: the same numbers as transformers computes
directly, and endpoint failures retried, then reported with the URL (and never the API key)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posteval.errors import InputError, RunnerError
from posteval.runners.base import GenerationOptions, Loglikelihood
from posteval.runners.openai import OpenAIRunner
from tests.helpers import PROMPT, heldout_rows, plain_greedy
from tests.openai_server import OpenAIServer, closed_port_url

BOS = "<|endoftext|>"  # the toy tokenizer's beginning-of-text (and end-of-text) token
CONTEXT = PROMPT.format(text="The tenant shall pay the rent on the first day of each month.")
TEXTS = ["The tenant shall pay the rent.", "Either party may end this agreement with notice.", "Hello"]


@pytest.fixture(scope="module")
def served(base_checkpoint: Path) -> Iterator[OpenAIServer]:
    with OpenAIServer(base_checkpoint) as server:
        yield server


@pytest.fixture
def server(served: OpenAIServer) -> Iterator[OpenAIServer]:
    served.reset()
    yield served
    served.reset()


@pytest.fixture(scope="module")
def direct(base_checkpoint: Path) -> tuple[Any, Any]:
    """The served checkpoint loaded straight into transformers: the reference."""
    return AutoModelForCausalLM.from_pretrained(base_checkpoint).eval(), AutoTokenizer.from_pretrained(
        base_checkpoint
    )


def _runner(url: str, **options: Any) -> OpenAIRunner:
    return OpenAIRunner(url, "toy", **options)


def _collect(batches: Iterator[tuple[list[int], list[Any]]], n: int) -> list[Any]:
    """Results in input order, each index yielded exactly once."""
    results: dict[int, Any] = {}
    for indices, outputs in batches:
        for i, output in zip(indices, outputs, strict=True):
            assert i not in results
            results[i] = output
    assert sorted(results) == list(range(n))
    return [results[i] for i in range(n)]


@torch.inference_mode()
def _direct_scores(direct: tuple[Any, Any], ids: list[int], first: int) -> tuple[float, int, bool]:
    """Sum of log P(ids[i] | ids[:i]) for i >= ``first``, how many, and whether each was the argmax."""
    model, _ = direct
    scores = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    targets = torch.tensor(ids[first:])
    rows = scores[first - 1 : len(ids) - 1]
    logprob = float(rows.gather(1, targets[:, None]).sum())
    return logprob, len(targets), bool((rows.argmax(dim=-1) == targets).all())


def _encode(direct: tuple[Any, Any], text: str) -> list[int]:
    return list(direct[1](text, add_special_tokens=False)["input_ids"])


def _direct_loglikelihood(direct: tuple[Any, Any], context: str, continuation: str) -> Loglikelihood:
    context_ids = _encode(direct, context)
    ids = _encode(direct, context + continuation)
    assert ids[: len(context_ids)] == context_ids  # the pairs below keep the token boundary
    logprob, n_tokens, is_greedy = _direct_scores(direct, ids, len(context_ids))
    return Loglikelihood(logprob, n_tokens, len(continuation.encode()), is_greedy)


def _assert_close(got: list[Loglikelihood], expected: list[Loglikelihood]) -> None:
    assert [r.logprob for r in got] == pytest.approx([r.logprob for r in expected], rel=1e-4)
    assert [(r.n_tokens, r.n_bytes, r.is_greedy) for r in got] == [
        (r.n_tokens, r.n_bytes, r.is_greedy) for r in expected
    ]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_generate_equals_a_plain_greedy_loop(
    server: OpenAIServer, base_checkpoint: Path, batch_size: int
) -> None:
    prompts = [PROMPT.format(**row) for row in heldout_rows(5)] + ["The tenant", "Once upon a time"]
    outputs = _collect(
        _runner(server.base_url).generate(prompts, GenerationOptions(8, ("\n",)), batch_size=batch_size),
        len(prompts),
    )
    assert outputs == plain_greedy(base_checkpoint, prompts, 8)
    sent = [request.body for request in server.requests]
    assert [len(body["prompt"]) for body in sent] == ([1] * 7 if batch_size == 1 else [4, 3])
    assert all(body["stop"] == ["\n"] and body["temperature"] == 0 for body in sent)


def test_loglikelihood_equals_a_direct_computation(server: OpenAIServer, direct: tuple[Any, Any]) -> None:
    requests = [
        (CONTEXT, " lease"),
        (CONTEXT, " nda"),
        (CONTEXT, " employment"),
        ("The tenant", " shall pay"),
    ]
    got = _collect(_runner(server.base_url).loglikelihood(requests, batch_size=3), len(requests))
    _assert_close(got, [_direct_loglikelihood(direct, *request) for request in requests])


def test_is_greedy_only_for_the_models_own_greedy_continuation(
    server: OpenAIServer, direct: tuple[Any, Any], base_checkpoint: Path
) -> None:
    greedy = plain_greedy(base_checkpoint, [CONTEXT], 3)[0]
    other = " nda" if greedy != " nda" else " lease"
    requests = [(CONTEXT, greedy), (CONTEXT, other)]
    got = _collect(_runner(server.base_url).loglikelihood(requests), 2)
    assert [r.is_greedy for r in got] == [True, False]
    _assert_close(got, [_direct_loglikelihood(direct, *request) for request in requests])


def test_rolling_loglikelihood_without_bos_text_scores_every_token_but_the_first(
    server: OpenAIServer, direct: tuple[Any, Any]
) -> None:
    got = _collect(_runner(server.base_url).rolling_loglikelihood(TEXTS, batch_size=2), len(TEXTS))
    expected = []
    for text in TEXTS:
        logprob, n_tokens, _ = _direct_scores(direct, _encode(direct, text), 1)
        expected.append((logprob, n_tokens, len(text.encode())))
    assert [r.logprob for r in got] == pytest.approx([e[0] for e in expected], rel=1e-4)
    assert [(r.n_tokens, r.n_bytes) for r in got] == [e[1:] for e in expected]


def test_rolling_loglikelihood_with_bos_text_scores_every_token_after_the_beginning_of_text(
    server: OpenAIServer, direct: tuple[Any, Any]
) -> None:
    runner = _runner(server.base_url, bos_text=BOS)
    got = _collect(runner.rolling_loglikelihood(TEXTS), len(TEXTS))
    bos_id = direct[1].convert_tokens_to_ids(BOS)
    expected = [_direct_scores(direct, [bos_id, *_encode(direct, text)], 1) for text in TEXTS]
    assert [r.logprob for r in got] == pytest.approx([e[0] for e in expected], rel=1e-4)
    assert [r.n_tokens for r in got] == [len(_encode(direct, text)) for text in TEXTS]


def test_an_empty_context_is_scored_after_bos_text_and_refused_without_it(
    server: OpenAIServer, direct: tuple[Any, Any]
) -> None:
    got = _collect(_runner(server.base_url, bos_text=BOS).loglikelihood([("", "Hello there")]), 1)
    _assert_close(got, [_direct_loglikelihood(direct, BOS, "Hello there")])
    with pytest.raises(InputError, match="empty context"):
        list(_runner(server.base_url).loglikelihood([("", "Hello there")]))


def test_rolling_windows_are_refused(server: OpenAIServer) -> None:
    with pytest.raises(InputError, match="stride"):
        list(_runner(server.base_url).rolling_loglikelihood(TEXTS, stride=16))


def test_a_text_longer_than_the_servers_context_raises_the_servers_error_at_once(
    server: OpenAIServer,
) -> None:
    runner = _runner(server.base_url)
    with pytest.raises(RunnerError, match="maximum context length is 128 tokens") as caught:
        list(runner.rolling_loglikelihood(["the rent " * 100]))
    assert f"{server.base_url}/completions answered HTTP 400" in str(caught.value)
    assert len(server.requests) == 1


def test_an_unknown_model_raises_the_servers_404_at_once(server: OpenAIServer) -> None:
    runner = OpenAIRunner(server.base_url, "nope")
    with pytest.raises(RunnerError, match=r"HTTP 404: The model `nope` does not exist") as caught:
        list(runner.generate(["Hi"], GenerationOptions(2)))
    assert runner.url in str(caught.value)
    assert len(server.requests) == 1


def test_a_server_answering_503_then_success_is_retried(server: OpenAIServer) -> None:
    server.faults.fail_next = 2
    outputs = _collect(_runner(server.base_url).generate(["The tenant"], GenerationOptions(4)), 1)
    assert len(outputs) == 1
    assert len(server.requests) == 3


def test_a_server_that_keeps_answering_503_raises_naming_the_url_after_max_retries(
    server: OpenAIServer,
) -> None:
    server.faults.fail_next = 100
    runner = _runner(server.base_url, max_retries=2)
    with pytest.raises(RunnerError) as caught:
        list(runner.generate(["The tenant"], GenerationOptions(4)))
    assert str(caught.value) == (
        f"{server.base_url}/completions failed after 3 attempts; last error: HTTP 503: injected failure 503"
    )
    assert len(server.requests) == 3


def test_a_refused_connection_raises_naming_the_url() -> None:
    url = closed_port_url()
    with pytest.raises(RunnerError, match="ConnectError") as caught:
        list(_runner(url, max_retries=1).generate(["The tenant"], GenerationOptions(4)))
    assert str(caught.value).startswith(f"{url}/completions failed after 2 attempts")


def test_a_timeout_raises_naming_the_url(server: OpenAIServer) -> None:
    server.faults.delay_s = 2.0
    runner = _runner(server.base_url, timeout=0.2, max_retries=1)
    with pytest.raises(RunnerError, match="ReadTimeout") as caught:
        list(runner.generate(["The tenant"], GenerationOptions(4)))
    assert str(caught.value).startswith(f"{server.base_url}/completions failed after 2 attempts")


def test_an_answer_that_is_not_openai_like_raises_naming_what_is_missing(server: OpenAIServer) -> None:
    server.faults.body = {"generated_text": "hello"}
    with pytest.raises(RunnerError, match=r"answered without a 'choices' list") as caught:
        list(_runner(server.base_url).generate(["The tenant"], GenerationOptions(4)))
    assert server.base_url in str(caught.value)
    server.faults.body = {"choices": [{"index": 0, "text": "The tenant x", "logprobs": None}]}
    with pytest.raises(RunnerError, match=r"without logprobs\.\{tokens, token_logprobs"):
        list(_runner(server.base_url).loglikelihood([("The tenant", " x")]))


def test_the_api_key_is_sent_as_a_bearer_token_and_never_shown(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-7f3a9c"
    monkeypatch.setenv("POSTEVAL_TEST_OPENAI_KEY", secret)
    runner = _runner(server.base_url, api_key_env="POSTEVAL_TEST_OPENAI_KEY", max_retries=1)
    list(runner.generate(["The tenant"], GenerationOptions(2)))
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    server.faults.fail_next = 100
    with caplog.at_level(logging.DEBUG), pytest.raises(RunnerError) as caught:
        list(runner.generate(["The tenant"], GenerationOptions(2)))
    shown = [str(caught.value), repr(runner), *runner.warnings, caplog.text]
    assert server.base_url in str(caught.value)
    assert not [text for text in shown if secret in text]


def test_an_unset_api_key_variable_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTEVAL_TEST_OPENAI_KEY", raising=False)
    with pytest.raises(InputError, match="POSTEVAL_TEST_OPENAI_KEY"):
        OpenAIRunner("http://127.0.0.1:1/v1", "toy", api_key_env="POSTEVAL_TEST_OPENAI_KEY")


def test_a_token_spanning_context_and_continuation_is_left_out_and_warned(server: OpenAIServer) -> None:
    runner = _runner(server.base_url)
    got = _collect(runner.loglikelihood([("Type: ", "lease"), ("Type:", " lease")]), 2)
    assert [r.n_tokens for r in got] == [0, 1]
    assert runner.warnings == [
        "1 request(s) had a token spanning the end of the context and the start of the continuation; "
        "it was left out of the continuation's logprob"
    ]
