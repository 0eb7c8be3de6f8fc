"""Test helpers: a plain greedy loop independent of posteval's runner, and suite/data writers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HELDOUT = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "heldout.jsonl"
PROMPT = "Clause: {text}\nType:"


def heldout_rows(n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of the bundled held-out contract clauses."""
    lines = HELDOUT.read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


@torch.inference_mode()
def plain_greedy(checkpoint: Path, prompts: list[str], max_new_tokens: int, stop: str = "\n") -> list[str]:
    """Greedy continuations, one unpadded prompt at a time, cut at ``stop``: the reference behaviour."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        generated = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
        text = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True)
        outputs.append(text.split(stop)[0])
    return outputs


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


SMALL_SUITE = """\
name: r
allow_incomplete: true
datasets:
  - name: qa
    path: qa.jsonl
    prompt: "{prompt}"
    reference: a
    metrics: {metrics}
"""


def small_suite(
    tmp_path: Path, prompt: str = "Q: {q}", metrics: str = "[exact_match]", extra: str = ""
) -> Path:
    """A one-dataset suite at ``tmp_path/suite.yaml`` (qa.jsonl, fields q and a) for edge-case tests."""
    path = tmp_path / "suite.yaml"
    path.write_text(SMALL_SUITE.format(prompt=prompt, metrics=metrics) + extra)
    return path
