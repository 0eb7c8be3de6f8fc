"""Loglikelihood and perplexity from the HF runner: equal to plain loops, and batch-size invariant."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from posteval.errors import RunnerError
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.runners.base import GenerationOptions, Loglikelihood, adaptive_batches
from posteval.runners.hf import HFRunner
from tests.helpers import PROMPT, heldout_rows

LABELS = ["lease", "nda", "employment"]


@pytest.fixture(scope="module")
def runner(finetuned_checkpoint: Path) -> HFRunner:
    return HFRunner(resolve_checkpoint(finetuned_checkpoint))


def _collect(batches: object, n: int) -> list[Loglikelihood]:
    out: list[Loglikelihood | None] = [None] * n
    for indices, results in batches:  # type: ignore[attr-defined]
        for i, r in zip(indices, results, strict=True):
            assert out[i] is None, "an index was yielded twice"
            out[i] = r
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


@torch.inference_mode()
def _plain_loglikelihood(checkpoint: Path, context: str, continuation: str) -> float:
    """Sum of log-probabilities of the continuation tokens, one unpadded forward pass, no prefix token
    before a non-empty context (lm-evaluation-harness's convention; the toy tokenizer adds none)."""
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(context + continuation, add_special_tokens=False)["input_ids"][len(ctx) :]
    ids = torch.tensor([[*ctx, *cont]])
    logprobs = F.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return float(picked[-len(cont) :].sum())


@torch.inference_mode()
def _plain_perplexity_nll(checkpoint: Path, text: str, stride: int) -> tuple[float, int]:
    """Total NLL and token count the way the transformers perplexity guide computes it, text by text."""
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    max_length = model.config.n_positions
    ids = torch.tensor([[tok.eos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])
    n_targets = ids.shape[1] - 1
    total, counted = 0.0, 0
    for start in range(0, n_targets, stride):
        end = min(start + stride, n_targets)
        first = max(0, end - max_length)
        window = ids[:, first : end + 1]
        labels = window.clone()
        labels[:, : window.shape[1] - (end - start)] = -100
        loss = model(window[:, :-1], labels=None).logits
        logprobs = F.log_softmax(loss[0].float(), dim=-1)
        targets = window[0, 1:]
        mask = labels[0, 1:] != -100
        total -= float(logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)[mask].sum())
        counted += int(mask.sum())
    return total, counted


def test_loglikelihood_equals_a_plain_forward_pass(runner: HFRunner, finetuned_checkpoint: Path) -> None:
    rows = heldout_rows(3)
    requests = [(PROMPT.format(**row), " " + label) for row in rows for label in LABELS]
    got = _collect(runner.loglikelihood(requests, batch_size=4), len(requests))
    for (context, continuation), result in zip(requests, got, strict=True):
        expected = _plain_loglikelihood(finetuned_checkpoint, context, continuation)
        assert result.logprob == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert result.n_bytes == len(continuation.encode())


def test_loglikelihood_is_batch_size_invariant(runner: HFRunner) -> None:
    rows = heldout_rows(8)
    requests = [(PROMPT.format(**row), " " + label) for row in rows for label in LABELS]
    one = _collect(runner.loglikelihood(requests, batch_size=1), len(requests))
    sixteen = _collect(runner.loglikelihood(requests, batch_size=16), len(requests))
    for a, b in zip(one, sixteen, strict=True):
        assert b.logprob == pytest.approx(a.logprob, rel=1e-4, abs=1e-4)
        assert (a.n_tokens, a.is_greedy) == (b.n_tokens, b.is_greedy)


def test_is_greedy_marks_the_models_own_continuation(runner: HFRunner) -> None:
    prompt = PROMPT.format(**heldout_rows(1)[0])
    (_, [own]) = next(iter(runner.generate([prompt], GenerationOptions(4, ("\n",)), batch_size=1)))
    results = _collect(runner.loglikelihood([(prompt, own), (prompt, own + " zebra zebra")]), 2)
    assert [r.is_greedy for r in results] == [True, False]


@pytest.mark.parametrize("stride", [None, 16])
def test_rolling_perplexity_equals_an_unbatched_plain_loop(
    runner: HFRunner, finetuned_checkpoint: Path, stride: int | None
) -> None:
    general = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "general.jsonl"
    texts = [json.loads(line)["text"] for line in general.read_text().splitlines()[:6]]
    texts.append(" ".join(texts))  # longer than the 128-token context: several windows
    got = _collect(runner.rolling_loglikelihood(texts, batch_size=5, stride=stride), len(texts))
    for text, result in zip(texts, got, strict=True):
        nll, count = _plain_perplexity_nll(finetuned_checkpoint, text, stride or runner.max_length)
        assert result.n_tokens == count
        assert math.exp(-result.logprob / count) == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert got[-1].n_tokens > runner.max_length


def test_auto_batch_size_halves_on_out_of_memory() -> None:
    sizes: list[int] = []

    def run(indices: list[int]) -> list[int]:
        sizes.append(len(indices))
        if len(indices) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [i * 10 for i in indices]

    batches = list(adaptive_batches(list(range(20)), "auto", run))
    assert sizes == [20, 16, 8, 8, 4]  # auto starts at 32 (all 20), then 16 fails, then 8s
    assert [i for indices, _ in batches for i in indices] == list(range(20))
    assert [r for _, results in batches for r in results] == [i * 10 for i in range(20)]


def test_fixed_batch_size_out_of_memory_is_a_clear_error() -> None:
    def run(indices: list[int]) -> list[int]:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(RunnerError, match=r"^out of memory at batch size 4: use a smaller batch_size"):
        list(adaptive_batches([0, 1, 2], 4, run))


def test_prompt_longer_than_the_context_is_truncated_and_counted(runner: HFRunner) -> None:
    long_prompt = "Clause: " + "the tenant pays rent " * 200 + "\nType:"
    before = len(runner.warnings)
    [(_, [output])] = list(runner.generate([long_prompt], GenerationOptions(4, ("\n",)), batch_size=1))
    assert isinstance(output, str)
    assert runner.warnings[before:] == [
        f"1 prompt(s) longer than {runner.max_length - 4} tokens were truncated from the left"
    ]


def test_missing_pad_token_falls_back_to_eos_and_says_so_once(
    finetuned_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(finetuned_checkpoint, copy)
    with caplog.at_level(logging.WARNING, logger="posteval.runners.hf"):
        first = HFRunner(resolve_checkpoint(copy))
        HFRunner(resolve_checkpoint(copy))
    assert first.tokenizer.pad_token == first.tokenizer.eos_token
    assert [r.getMessage() for r in caplog.records] == [
        f"tokenizer at {copy} has no pad token; padding with eos '<|endoftext|>'"
    ]


def test_kv_cache_is_on_even_when_the_checkpoint_says_use_cache_false(
    finetuned_checkpoint: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(finetuned_checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "use_cache": False}))
    runner = HFRunner(resolve_checkpoint(copy))
    assert runner.model.config.use_cache is True
    assert runner.model.generation_config.use_cache is True
