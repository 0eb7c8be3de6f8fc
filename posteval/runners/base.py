"""The protocol every model backend follows, and the batching helpers they share."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from posteval.errors import RunnerError

BatchSize = int | str  # a positive integer or "auto"
T = TypeVar("T")
Batch = tuple[list[int], list[T]]  # indices into the input, and the results for them, in that order


BosMode = Literal["auto", "always", "never"]
BOS_MODES: tuple[BosMode, ...] = ("auto", "always", "never")
P = TypeVar("P", list[int], str)


_TEMPLATED: ContextVar[bool] = ContextVar("posteval_templated_prompts", default=False)


@contextmanager
def templated_prompts() -> Iterator[None]:
    """Within the block, contexts are chat-rendered text that already holds whatever its template writes
    (a BOS included): every runner puts nothing before them (posteval.runners.chat)."""
    token = _TEMPLATED.set(True)
    try:
        yield
    finally:
        _TEMPLATED.reset(token)


@dataclass(frozen=True)
class PrefixPolicy(Generic[P]):
    """The one tokenization policy: what goes before a context, for generation and scoring alike.

    ``own`` is what the tokenizer itself puts before any text (``add_bos_token`` or its post-processor;
    empty for GPT-2-style tokenizers, and empty for served models, whose server tokenizes as it does for
    any prompt); ``bos`` is the beginning-of-text token (an id list, or ``bos_text`` for served models),
    used where a context is empty and something must condition the first token, as lm-evaluation-harness
    does for rolling perplexity's first window. ``mode`` is the suite's ``bos`` setting:

    - ``auto``: ``own`` before every context; ``own`` or else ``bos`` before an empty one;
    - ``always``: ``own`` or else ``bos`` before every context;
    - ``never``: nothing, ever (an empty context cannot be scored, and a text's first token is not).
    """

    mode: BosMode
    own: P
    bos: P | None

    def prefix(self, context: str) -> P:
        """What goes before ``context``; empty when nothing does."""
        empty = self.own[:0]
        if self.mode == "never" or (context and _TEMPLATED.get()):
            return empty
        if self.mode == "always" or not context:
            return self.own or (self.bos if self.bos is not None else empty)
        return self.own

    def describe(self) -> dict[str, object]:
        """The resolved policy as plain data: part of a dataset's output settings (the config hash)."""
        return {
            "bos": self.mode,
            "prefix": self.prefix("x"),
            "empty_context_prefix": self.prefix(""),
        }


def policy_signature(described: dict[str, object]) -> str:
    """A described policy as one signature field: ``tokens:bos=auto,prefix=[],empty=[0]``.

    Values are JSON with ``|`` escaped, so a ``bos_text`` such as ``<|endoftext|>`` never splits the
    signature's ``|``-separated fields.
    """
    parts = [
        f"bos={described['bos']}",
        f"prefix={json.dumps(described['prefix'])}",
        f"empty={json.dumps(described['empty_context_prefix'])}",
    ]
    return "tokens:" + ",".join(parts).replace("|", "\\u007c")


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding options: greedy (temperature 0; the batch size never changes an output), or sampling with
    ``temperature`` and ``top_p``, seeded with ``seed`` at every batch (a sampled output depends on the
    seed and the batch it was drawn in; posteval stores it once and never draws it again)."""

    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    @property
    def sampled(self) -> bool:
        """Whether this samples rather than decodes greedily."""
        return self.temperature > 0


@dataclass(frozen=True)
class Loglikelihood:
    """log P(continuation | context) summed over the continuation's tokens.

    ``is_greedy`` says whether greedy decoding from the context would produce exactly the continuation;
    ``n_bytes`` is the continuation's length in UTF-8 bytes (for bits per byte).
    """

    logprob: float
    n_tokens: int
    n_bytes: int
    is_greedy: bool = False


class Runner(Protocol):
    """A model backend. Every method yields results batch by batch, each index of the input exactly once,
    so callers can store each batch as it comes (the cache and crash-resume point)."""

    name: str
    warnings: list[str]

    def generate(
        self, prompts: Sequence[str], options: GenerationOptions, *, batch_size: BatchSize = "auto"
    ) -> Iterator[Batch[str]]:
        """Greedy continuations of ``prompts`` with stop sequences removed."""
        ...

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], *, batch_size: BatchSize = "auto"
    ) -> Iterator[Batch[Loglikelihood]]:
        """log P(continuation | context) for each (context, continuation) pair."""
        ...

    def rolling_loglikelihood(
        self, texts: Sequence[str], *, batch_size: BatchSize = "auto", stride: int | None = None
    ) -> Iterator[Batch[Loglikelihood]]:
        """log P(text) over every token of each text, in rolling windows of the model's context.

        Each window is at most the model's context long and scores ``stride`` new tokens (default: a
        whole window), conditioned on the tokens before them inside the window; the first token of a
        text is conditioned on the policy's prefix for an empty context (not scored where there is none).
        """
        ...


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut at the earliest stop sequence (the stop sequence itself removed)."""
    cut = len(text)
    for sequence in stop:
        if sequence and (at := text.find(sequence)) != -1:
            cut = min(cut, at)
    return text[:cut]


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices ordered longest first (ties in input order), so an out-of-memory error shows at once."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into fixed-size batches, longest first."""
    order = longest_first(lengths)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


AUTO_BATCH_START = 32


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator (or host) out-of-memory error."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def adaptive_batches(
    order: Sequence[int],
    batch_size: BatchSize,
    run: Callable[[list[int]], list[T]],
    *,
    on_oom: Callable[[], None] | None = None,
) -> Iterator[Batch[T]]:
    """Run ``run`` over ``order`` in batches; with "auto", halve the size on out-of-memory and retry.

    A fixed batch size never changes; an out-of-memory error with it (or at size 1) is raised.
    """
    auto = batch_size == "auto"
    size = AUTO_BATCH_START if auto else int(batch_size)
    position = 0
    while position < len(order):
        indices = list(order[position : position + size])
        try:
            results = run(indices)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if not auto or size == 1:
                raise RunnerError(
                    f"out of memory at batch size {size}: use a smaller batch_size, or 'auto'"
                ) from exc
            if on_oom is not None:
                on_oom()
            size //= 2
            continue
        position += len(indices)
        yield indices, results
