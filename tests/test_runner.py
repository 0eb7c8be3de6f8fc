"""The HF runner: greedy outputs do not depend on the batch size, and match a plain loop."""

from __future__ import annotations

from pathlib import Path

from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.runners.base import GenerationOptions, length_sorted_batches, truncate_at_stop
from posteval.runners.hf import HFRunner
from tests.helpers import PROMPT, heldout_rows, plain_greedy


def _outputs(runner: HFRunner, prompts: list[str], batch_size: int) -> list[str]:
    result: list[str | None] = [None] * len(prompts)
    for indices, outputs in runner.generate(prompts, GenerationOptions(8, ("\n",)), batch_size=batch_size):
        for i, out in zip(indices, outputs, strict=True):
            assert result[i] is None
            result[i] = out
    assert all(r is not None for r in result)
    return [r for r in result if r is not None]


def test_batched_generation_equals_batch_size_one_and_a_plain_loop(finetuned_checkpoint: Path) -> None:
    prompts = [PROMPT.format(**row) for row in heldout_rows(15)]
    runner = HFRunner(resolve_checkpoint(finetuned_checkpoint))
    one = _outputs(runner, prompts, 1)
    assert _outputs(runner, prompts, 5) == one
    assert _outputs(runner, prompts, 16) == one
    assert one == plain_greedy(finetuned_checkpoint, prompts, 8)


def test_length_sorted_batches_put_the_longest_first() -> None:
    assert length_sorted_batches([3, 9, 1, 9, 5], 2) == [[1, 3], [4, 0], [2]]


def test_truncate_at_the_earliest_stop_sequence() -> None:
    assert truncate_at_stop(" nda\nmore###x", ["###", "\n"]) == " nda"
    assert truncate_at_stop("no stop here", ["\n"]) == "no stop here"
