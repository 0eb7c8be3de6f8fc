"""The Hugging Face backend: transformers (and peft for adapters), greedy and batched.

Generation pads on the left (so every continuation starts at the same column); scoring pads on the
right, where a causal model's logits for real tokens cannot see the padding at all. Both sort requests
longest first and return results in input order, so the batch size never changes a result beyond
floating-point noise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from posteval.errors import CheckpointError, InputError
from posteval.inputs.checkpoint import CheckpointInfo, tokenizer_path
from posteval.inputs.preflight import load_report_problems
from posteval.runners.base import (
    Batch,
    BatchSize,
    BosMode,
    GenerationOptions,
    Loglikelihood,
    PrefixPolicy,
    adaptive_batches,
    longest_first,
    truncate_at_stop,
)
from posteval.runners.hf_scoring import Scored, ScoreItem, score_batch, share_contexts
from posteval.settings import get_settings

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_warned_pad: set[str] = set()


def pick_device(requested: str = "auto") -> torch.device:
    """``requested``, or for "auto" the best available of cuda, mps and cpu."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """``requested``, or for "auto" bf16 on a GPU that supports it, fp16 on mps, else fp32."""
    if requested != "auto":
        if requested not in _DTYPES:
            raise CheckpointError(f"unknown dtype {requested!r} (expected one of {sorted(_DTYPES)} or auto)")
        return _DTYPES[requested]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer with left padding; without a pad token, eos stands in (said once)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CheckpointError(f"tokenizer at {path} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
        if path not in _warned_pad:
            _warned_pad.add(path)
            log.warning("tokenizer at %s has no pad token; padding with eos %r", path, tokenizer.eos_token)
    return tokenizer


def tokenizer_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the tokenizer itself puts before any text (``add_bos_token`` or its post-processor)."""
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def prefix_policy(tokenizer: PreTrainedTokenizerBase, mode: BosMode) -> PrefixPolicy[list[int]]:
    """The tokenization policy for ``tokenizer``: its own prefix, and bos (else eos) for empty contexts."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return PrefixPolicy(mode=mode, own=tokenizer_prefix(tokenizer), bos=None if bos is None else [int(bos)])


def checkpoint_policy(checkpoint: CheckpointInfo, mode: BosMode) -> PrefixPolicy[list[int]]:
    """The policy a runner for ``checkpoint`` would use, from its tokenizer alone (no model loaded)."""
    try:
        return prefix_policy(load_tokenizer(tokenizer_path(checkpoint)), mode)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer of {checkpoint.path}: {exc}") from exc


def context_length(config: Any, tokenizer: PreTrainedTokenizerBase, cap: int | None) -> int:
    """The longest sequence to feed the model: its positions, the tokenizer's limit, and the settings' cap."""
    limits = [
        getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048
    ]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 1_000_000:  # huge values mean "no limit"
        limits.append(tokenizer_limit)
    if cap:
        limits.append(cap)
    return int(min(limits))


class HFRunner:
    """A transformers causal LM, loaded once, generating and scoring in length-sorted batches."""

    name = "hf"

    def __init__(
        self,
        checkpoint: CheckpointInfo,
        *,
        device: str = "auto",
        dtype: str = "auto",
        bos: BosMode = "auto",
        share_contexts: bool = True,
    ) -> None:
        self.checkpoint = checkpoint
        # Single-token continuations of one context share its forward pass (False: a pass per request).
        self.share_contexts = share_contexts
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.warnings: list[str] = []
        self._truncated_scores = 0
        self._encoded: dict[str, list[int]] = {}  # one call's texts, tokenized together (_encoding)
        self.model, self.tokenizer = self._load(checkpoint)
        self.max_length = context_length(self.model.config, self.tokenizer, get_settings().max_length)
        self.policy = prefix_policy(self.tokenizer, bos)

    def _load(self, checkpoint: CheckpointInfo) -> tuple[Any, PreTrainedTokenizerBase]:
        try:
            if checkpoint.is_adapter:
                from peft import PeftModel

                if checkpoint.base_path is None:
                    raise CheckpointError(f"adapter {checkpoint.path} has no resolved base model")
                base = AutoModelForCausalLM.from_pretrained(str(checkpoint.base_path), dtype=self.dtype)
                model: Any = PeftModel.from_pretrained(base, str(checkpoint.path))
            else:
                loaded: Any = AutoModelForCausalLM.from_pretrained(
                    str(checkpoint.path), dtype=self.dtype, output_loading_info=True
                )
                model, report = loaded
                problems = load_report_problems(report)
                if problems:  # never evaluate randomly initialised weights (preflight says it first)
                    raise CheckpointError(f"checkpoint {checkpoint.path}: the weights do not fit: {problems}")
            tokenizer = load_tokenizer(tokenizer_path(checkpoint))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load checkpoint {checkpoint.path}: {exc}") from exc
        # Trainer often saves use_cache=false (gradient checkpointing); without the KV cache greedy
        # generation recomputes the whole prefix at every step.
        model.config.use_cache = True
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.use_cache = True
        return model.to(self.device).eval(), tokenizer

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # Generation -----------------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[str], options: GenerationOptions, *, batch_size: BatchSize = "auto"
    ) -> Iterator[Batch[str]]:
        """Continuations of ``prompts`` (greedy, or sampled as ``options`` say), per batch, stops removed."""
        max_prompt = max(1, self.max_length - options.max_new_tokens)
        with self._encoding(prompts):
            encoded = [self._with_prefix(prompt, max_prompt) for prompt in prompts]
        truncated = sum(cut for _, cut in encoded)
        if truncated:
            self.warnings.append(
                f"{truncated} prompt(s) longer than {max_prompt} tokens were truncated from the left"
            )
        order = longest_first([len(ids) for ids, _ in encoded])

        def run(indices: list[int]) -> list[str]:
            return self._generate_batch([encoded[i][0] for i in indices], options)

        yield from adaptive_batches(order, batch_size, run, on_oom=self._empty_cache)

    def _with_prefix(self, prompt: str, limit: int) -> tuple[list[int], bool]:
        """The policy's prefix and the prompt's tokens, cut from the left (after the prefix) to ``limit``."""
        prefix = self.policy.prefix(prompt)
        ids = self._encode(prompt)
        keep = max(1, limit - len(prefix))
        return [*prefix, *ids[-keep:]], len(ids) > keep

    @torch.inference_mode()
    def _generate_batch(self, encoded_prompts: list[list[int]], options: GenerationOptions) -> list[str]:
        if any(not ids for ids in encoded_prompts):
            raise InputError(
                "an empty prompt cannot be generated from with bos: never (nothing to condition on)"
            )
        encoded = self.tokenizer.pad({"input_ids": encoded_prompts}, padding=True, return_tensors="pt").to(
            self.device
        )
        decoding: dict[str, Any] = {"do_sample": False}
        if options.sampled:
            decoding = {"do_sample": True, "temperature": options.temperature, "top_p": options.top_p}
            torch.manual_seed(options.seed)
        generated = self.model.generate(
            **encoded,
            **decoding,
            max_new_tokens=options.max_new_tokens,
            num_beams=1,
            use_cache=True,
            stop_strings=list(options.stop) or None,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [truncate_at_stop(text, options.stop) for text in texts]

    # Scoring --------------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        known = self._encoded.get(text)
        if known is not None:
            return list(known)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @contextmanager
    def _encoding(self, texts: Iterable[str]) -> Iterator[None]:
        """Inside the block, :meth:`_encode` answers for ``texts`` from one batched tokenizer call: the same
        tokens as one call per text (each text is encoded on its own), without a Python round trip each.
        On the tiny benchmark model, per-text calls took two thirds of multiple choice's time."""
        unique = list(dict.fromkeys(texts))
        if unique:
            batch = self.tokenizer(unique, add_special_tokens=False)["input_ids"]
            self._encoded = dict(zip(unique, batch, strict=True))
        try:
            yield
        finally:
            self._encoded = {}

    def _pair_item(self, owner: int, context: str, continuation: str) -> ScoreItem:
        """The policy's prefix, then context + continuation split where the context's own tokens end."""
        context_ids = self._encode(context)
        whole = self._encode(context + continuation)
        if whole[: len(context_ids)] == context_ids and len(whole) > len(context_ids):
            continuation_ids = whole[len(context_ids) :]
        else:
            continuation_ids = self._encode(continuation)
        prefix = self.policy.prefix(context)
        if not prefix and not context_ids and continuation_ids:
            raise InputError(
                f"request {owner}: an empty context cannot be scored with bos: never "
                "(nothing conditions the continuation's first token)"
            )
        ids = [*prefix, *context_ids, *continuation_ids]
        if len(ids) > self.max_length + 1:
            ids = ids[-(self.max_length + 1) :]
            self._truncated_scores += 1
        return ScoreItem(ids=ids, n_scored=len(continuation_ids), owner=owner)

    def loglikelihood(
        self, requests: Sequence[tuple[str, str]], *, batch_size: BatchSize = "auto"
    ) -> Iterator[Batch[Loglikelihood]]:
        """log P(continuation | context) per request, with token and byte counts and greediness."""
        self._truncated_scores = 0
        with self._encoding(text for ctx, cont in requests for text in (ctx, ctx + cont)):
            items = [self._pair_item(i, ctx, cont) for i, (ctx, cont) in enumerate(requests)]
        if self._truncated_scores:
            self.warnings.append(
                f"{self._truncated_scores} scored request(s) longer than {self.max_length} tokens "
                "were truncated from the left"
            )
        n_bytes = [len(cont.encode("utf-8")) for _, cont in requests]
        if self.share_contexts:
            items = share_contexts(items)
        for indices, scored in self._score_items(items, batch_size):
            owners = [o for i in indices for o in (items[i].owners or (items[i].owner,))]
            flat = [result for results in scored for result in results]
            yield (
                owners,
                [
                    Loglikelihood(logprob=lp, n_tokens=n, n_bytes=n_bytes[o], is_greedy=greedy)
                    for o, (lp, n, greedy) in zip(owners, flat, strict=True)
                ],
            )

    def rolling_windows(self, owner: int, text: str, stride: int | None = None) -> list[ScoreItem]:
        """Windows of at most the model's context, each scoring ``stride`` new tokens of ``text``."""
        stride = min(stride or self.max_length, self.max_length)
        # With no prefix for an empty context (bos: never) the text's first token is context, not scored.
        full = [*self.policy.prefix(""), *self._encode(text)]
        n_targets = len(full) - 1
        windows = []
        for start in range(0, n_targets, stride):
            end = min(start + stride, n_targets)
            first = max(0, end - self.max_length)
            windows.append(ScoreItem(ids=full[first : end + 1], n_scored=end - start, owner=owner))
        return windows

    def rolling_loglikelihood(
        self, texts: Sequence[str], *, batch_size: BatchSize = "auto", stride: int | None = None
    ) -> Iterator[Batch[Loglikelihood]]:
        """log P(text) over all of its tokens, scored in rolling windows; yielded as texts complete."""
        with self._encoding(texts):
            items = [w for i, text in enumerate(texts) for w in self.rolling_windows(i, text, stride)]
        remaining = [0] * len(texts)
        for item in items:
            remaining[item.owner] += 1
        totals = [[0.0, 0] for _ in texts]
        empty = [i for i, count in enumerate(remaining) if count == 0]  # texts without a single token
        if empty:
            yield empty, [Loglikelihood(0.0, 0, len(texts[i].encode("utf-8"))) for i in empty]
        for indices, scored in self._score_items(items, batch_size, greedy=False):
            done = []
            for i, [(lp, n, _)] in zip(indices, scored, strict=True):
                owner = items[i].owner
                totals[owner][0] += lp
                totals[owner][1] += n
                remaining[owner] -= 1
                if remaining[owner] == 0:
                    done.append(owner)
            if done:
                yield (
                    sorted(done),
                    [
                        Loglikelihood(
                            logprob=float(totals[t][0]),
                            n_tokens=int(totals[t][1]),
                            n_bytes=len(texts[t].encode("utf-8")),
                        )
                        for t in sorted(done)
                    ],
                )

    def _score_items(
        self, items: Sequence[ScoreItem], batch_size: BatchSize, *, greedy: bool = True
    ) -> Iterator[Batch[list[Scored]]]:
        order = longest_first([len(item.ids) for item in items])
        pad = int(self.tokenizer.pad_token_id)

        def run(indices: list[int]) -> list[list[Scored]]:
            return score_batch(self.model, [items[i] for i in indices], pad, self.device, greedy=greedy)

        yield from adaptive_batches(order, batch_size, run, on_oom=self._empty_cache)
