"""The compute phase: posteval's HF runner against a plain batched transformers loop, the same rows.

Run with ``python benchmarks/bench_compute.py``. The model is loaded once and shared; each figure is the
best of ``--repeats`` runs after a warm-up, the two sides taken in turn. The plain loop has the same
semantics and the batching the issue asks of the runner: batches of 16 sorted by length (longest first),
padding only to the batch's longest row; greedy generation of at most 16 tokens stopping at "\\n"
(transformers' ``stop_strings``); multiple choice as one forward pass per prompt whose last position
scores every single-token choice; rolling perplexity as one pass per text (every text fits the context).
It prints both times and posteval's throughput as a share of the plain loop's. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data

from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.runners.base import GenerationOptions
from posteval.runners.hf import HFRunner

BATCH = 16


def _batches(lengths: list[int]) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + BATCH] for i in range(0, len(order), BATCH)]


@torch.inference_mode()
def plain_generate(model: Any, tok: Any, prompts: list[str]) -> list[str]:
    encoded = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = [""] * len(prompts)
    for batch in _batches([len(e) for e in encoded]):
        padded = tok.pad({"input_ids": [encoded[i] for i in batch]}, padding=True, return_tensors="pt")
        generated = model.generate(
            **padded,
            max_new_tokens=bench_data.MAX_NEW_TOKENS,
            do_sample=False,
            stop_strings=["\n"],
            tokenizer=tok,
            pad_token_id=tok.pad_token_id,
        )
        texts = tok.batch_decode(generated[:, padded["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(batch, texts, strict=True):
            out[i] = text.split("\n")[0]
    return out


@torch.inference_mode()
def plain_choice(model: Any, tok: Any, prompts: list[str], choices: list[str]) -> list[list[float]]:
    """One right-padded pass per prompt; the last real position scores each choice's one token.

    Each choice's token is where the prompt's own tokens end in the joint tokenization of prompt and
    choice (lm-evaluation-harness's convention, and posteval's): both tokenized in batched calls.
    """
    contexts = tok(prompts, add_special_tokens=False)["input_ids"]
    joint = tok([p + " " + c for p in prompts for c in choices], add_special_tokens=False)["input_ids"]
    k = len(choices)
    targets = [[joint[i * k + j][len(context)] for j in range(k)] for i, context in enumerate(contexts)]
    out: list[list[float]] = [[] for _ in prompts]
    for batch in _batches([len(c) for c in contexts]):
        width = max(len(contexts[i]) for i in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : len(contexts[i])] = torch.tensor(contexts[i])
            mask[row, : len(contexts[i])] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row, i in enumerate(batch):
            last = F.log_softmax(logits[row, len(contexts[i]) - 1].float(), dim=-1)
            out[i] = [float(last[t]) for t in targets[i]]
    return out


@torch.inference_mode()
def plain_rolling(model: Any, tok: Any, texts: list[str]) -> list[float]:
    """log P(text) with the eos token as the first token's context, one right-padded pass per text."""
    encoded = [[tok.eos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in texts]
    out = [0.0] * len(texts)
    for batch in _batches([len(e) for e in encoded]):
        width = max(len(encoded[i]) for i in batch) - 1
        ids = torch.full((len(batch), width), tok.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            n = len(encoded[i]) - 1
            ids[row, :n] = torch.tensor(encoded[i][:-1])
            mask[row, :n] = 1
        logprobs = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for row, i in enumerate(batch):
            n = len(encoded[i]) - 1
            targets = torch.tensor(encoded[i][1:])
            out[i] = float(logprobs[row, :n].gather(-1, targets.unsqueeze(-1)).sum())
    return out


def _drain(batches: Any) -> int:
    return sum(len(indices) for indices, _ in batches)


def _best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = HFRunner(resolve_checkpoint(bench_data.checkpoint()), device="cpu", dtype="float32")
    model, tok = runner.model, runner.tokenizer
    rows = bench_data.rows()
    prompts = [bench_data.PROMPT.format(**row) for row in rows["generate.jsonl"]]
    mc_prompts = [bench_data.PROMPT.format(**row) for row in rows["choice.jsonl"]]
    texts = [row["text"] for row in rows["perplexity.jsonl"]]
    options = GenerationOptions(bench_data.MAX_NEW_TOKENS, ("\n",))
    requests = [(p, " " + c) for p in mc_prompts for c in bench_data.LABELS]
    sides: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "generation": (
            lambda: _drain(runner.generate(prompts, options, batch_size=BATCH)),
            lambda: plain_generate(model, tok, prompts),
        ),
        "multiple choice": (
            lambda: _drain(runner.loglikelihood(requests, batch_size=BATCH)),
            lambda: plain_choice(model, tok, mc_prompts, bench_data.LABELS),
        ),
        "rolling perplexity": (
            lambda: _drain(runner.rolling_loglikelihood(texts, batch_size=BATCH)),
            lambda: plain_rolling(model, tok, texts),
        ),
    }
    figures: dict[str, dict[str, float]] = {}
    print(f"torch threads {torch.get_num_threads()}, batch size {BATCH}, best of {args.repeats}")
    for name, (ours, plain) in sides.items():
        ours(), plain()  # warm-up
        mine, theirs = [], []
        for _ in range(args.repeats):
            mine.append(_best(ours, 1))
            theirs.append(_best(plain, 1))
        figures[name] = {"posteval_s": min(mine), "plain_s": min(theirs)}
        share = min(theirs) / min(mine)
        mine_s, theirs_s = min(mine), min(theirs)
        print(
            f"{name:<20} posteval {mine_s:6.3f} s   plain loop {theirs_s:6.3f} s   {share:.0%} of the plain"
        )
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
