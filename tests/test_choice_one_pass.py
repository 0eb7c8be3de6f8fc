"""Multiple choice in one forward pass per prompt: where every choice is one token, the runner scores all
of a prompt's choices from one pass over its context, with exactly the numbers of a pass per choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.runners.base import Loglikelihood
from posteval.runners.hf import HFRunner
from tests.helpers import PROMPT, heldout_rows

CHOICES = [" lease", " nda", " employment"]


def _requests(n: int) -> list[tuple[str, str]]:
    return [(PROMPT.format(**row), choice) for row in heldout_rows(n) for choice in CHOICES]


def _scores(runner: HFRunner, requests: list[tuple[str, str]], batch_size: int) -> list[Loglikelihood]:
    out: dict[int, Loglikelihood] = {}
    for indices, results in runner.loglikelihood(requests, batch_size=batch_size):
        for i, result in zip(indices, results, strict=True):
            assert i not in out
            out[i] = result
    return [out[i] for i in range(len(requests))]


def _count_passes(runner: HFRunner) -> list[int]:
    calls = [0]
    runner.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@torch.inference_mode()
def _plain_next_token_logprobs(checkpoint: Path, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    """A plain transformers loop: one unpadded pass per context, every choice's first-token log-prob."""
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    out = []
    for context, choice in requests:
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        (target,) = tok(context + choice, add_special_tokens=False)["input_ids"][len(ctx) :]
        last = F.log_softmax(model(torch.tensor([ctx])).logits[0, -1].float(), dim=-1)
        out.append((float(last[target]), int(last.argmax()) == target))
    return out


@pytest.fixture(scope="module")
def runners(finetuned_checkpoint: Path) -> tuple[HFRunner, HFRunner]:
    info = resolve_checkpoint(finetuned_checkpoint)
    return HFRunner(info), HFRunner(info, share_contexts=False)


def test_the_choices_are_single_tokens(finetuned_checkpoint: Path) -> None:
    tok = AutoTokenizer.from_pretrained(finetuned_checkpoint)
    context = PROMPT.format(**heldout_rows(1)[0])
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    for choice in CHOICES:
        assert len(tok(context + choice, add_special_tokens=False)["input_ids"]) == len(ctx) + 1


def test_one_pass_per_prompt_equals_one_pass_per_choice(runners: tuple[HFRunner, HFRunner]) -> None:
    shared, per_pair = runners
    requests = _requests(12)
    shared_calls, pair_calls = _count_passes(shared), _count_passes(per_pair)
    one = _scores(shared, requests, batch_size=1)
    each = _scores(per_pair, requests, batch_size=1)
    assert shared_calls[0] == 12
    assert pair_calls[0] == 36
    assert one == each  # the same ids through the same model: the same floats


def test_batched_one_pass_scoring_agrees_with_a_plain_loop(
    runners: tuple[HFRunner, HFRunner], finetuned_checkpoint: Path
) -> None:
    shared, _ = runners
    requests = _requests(20)
    plain = _plain_next_token_logprobs(finetuned_checkpoint, requests)
    got = _scores(shared, requests, batch_size=8)
    assert [g.logprob for g in got] == pytest.approx([p[0] for p in plain], abs=1e-5, rel=0)
    assert [g.is_greedy for g in got] == [p[1] for p in plain]
    assert {(g.n_tokens, g.n_bytes) for g in got[:3]} == {(1, 6), (1, 4), (1, 11)}


def test_multi_token_continuations_keep_their_own_pass(runners: tuple[HFRunner, HFRunner]) -> None:
    shared, per_pair = runners
    context = PROMPT.format(**heldout_rows(1)[0])
    requests = [(context, " lease"), (context, " a non-disclosure agreement"), (context, " nda")]
    calls = _count_passes(shared)
    got = _scores(shared, requests, batch_size=1)
    assert calls[0] == 2  # the two single-token choices share one pass; the long one has its own
    assert got == _scores(per_pair, requests, batch_size=1)
    assert got[1].n_tokens > 1
