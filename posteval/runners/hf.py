"""The Hugging Face backend: transformers (and peft for adapters), greedy and batched."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from posteval.checkpoint import CheckpointInfo
from posteval.errors import CheckpointError
from posteval.runners.base import Batch, BatchSize, GenerationOptions, length_sorted_batches, truncate_at_stop

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8


def pick_device(requested: str = "auto") -> torch.device:
    """``requested``, or for "auto" the best available of cuda, mps and cpu."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """``requested``, or for "auto" bf16 on a GPU that supports it, fp16 on mps, else fp32."""
    if requested != "auto":
        names = {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }
        if requested not in names:
            raise CheckpointError(f"unknown dtype {requested!r} (expected one of {sorted(names)} or auto)")
        return names[requested]
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
        log.warning("tokenizer at %s has no pad token; using eos %r for padding", path, tokenizer.eos_token)
    return tokenizer


class HFRunner:
    """A transformers causal LM, loaded once, generating greedily in length-sorted batches."""

    def __init__(self, checkpoint: CheckpointInfo, *, device: str = "auto", dtype: str = "auto") -> None:
        self.checkpoint = checkpoint
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.warnings: list[str] = []
        tokenizer_path = str(checkpoint.path)
        try:
            if checkpoint.is_adapter:
                from peft import PeftModel

                assert checkpoint.base_path is not None
                base = AutoModelForCausalLM.from_pretrained(str(checkpoint.base_path), dtype=self.dtype)
                model: Any = PeftModel.from_pretrained(base, str(checkpoint.path))
                if not any(
                    (checkpoint.path / n).exists() for n in ("tokenizer.json", "tokenizer_config.json")
                ):
                    tokenizer_path = str(checkpoint.base_path)
            else:
                model = AutoModelForCausalLM.from_pretrained(str(checkpoint.path), dtype=self.dtype)
            self.tokenizer = load_tokenizer(tokenizer_path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load checkpoint {checkpoint.path}: {exc}") from exc
        # Trainer often saves use_cache=false (gradient checkpointing); without the KV cache greedy
        # generation recomputes the whole prefix at every step.
        model.config.use_cache = True
        self.model = model.to(self.device).eval()
        self.max_length = int(
            getattr(model.config, "n_positions", None)
            or getattr(model.config, "max_position_embeddings", 2048)
        )

    def _batch_size(self, batch_size: BatchSize) -> int:
        return DEFAULT_BATCH_SIZE if batch_size == "auto" else int(batch_size)

    def generate(
        self, prompts: Sequence[str], options: GenerationOptions, *, batch_size: BatchSize = "auto"
    ) -> Iterator[Batch]:
        """Greedy continuations of ``prompts``, yielded per batch, stop sequences removed."""
        max_prompt = max(1, self.max_length - options.max_new_tokens)
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        truncated = sum(length > max_prompt for length in lengths)
        if truncated:
            self.warnings.append(
                f"{truncated} prompt(s) longer than {max_prompt} tokens were truncated from the left"
            )
        for indices in length_sorted_batches(lengths, self._batch_size(batch_size)):
            outputs = self._generate_batch([prompts[i] for i in indices], options, max_prompt)
            yield indices, outputs

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[str], options: GenerationOptions, max_prompt: int) -> list[str]:
        encoded = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_prompt,
            add_special_tokens=False,
        ).to(self.device)
        generated = self.model.generate(
            **encoded,
            max_new_tokens=options.max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            stop_strings=list(options.stop) or None,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [truncate_at_stop(text, options.stop) for text in texts]


@lru_cache(maxsize=2)
def get_runner(checkpoint: CheckpointInfo, device: str = "auto", dtype: str = "auto") -> HFRunner:
    """One loaded model per checkpoint per process, shared by every dataset task of a flow run."""
    return HFRunner(checkpoint, device=device, dtype=dtype)
