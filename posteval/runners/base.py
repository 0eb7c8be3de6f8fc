"""The protocol every model backend follows, and the batching helpers they share."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

BatchSize = int | str  # a positive integer or "auto"
Batch = tuple[list[int], list[str]]  # indices into the input, and the outputs for them


@dataclass(frozen=True)
class GenerationOptions:
    """Greedy decoding options; the batch size never changes an output."""

    max_new_tokens: int
    stop: tuple[str, ...] = ()


class Runner(Protocol):
    """A model backend: greedy generation in batches, results yielded batch by batch."""

    def generate(
        self, prompts: Sequence[str], options: GenerationOptions, *, batch_size: BatchSize
    ) -> Iterator[Batch]:
        """Yield (indices, outputs) per batch; every index of ``prompts`` appears exactly once."""
        ...


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut at the earliest stop sequence (the stop sequence itself removed)."""
    cut = len(text)
    for sequence in stop:
        if sequence and (at := text.find(sequence)) != -1:
            cut = min(cut, at)
    return text[:cut]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, so an out-of-memory error shows on the first batch."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


ProgressFn = Callable[[int], None]
