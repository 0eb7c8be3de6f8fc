"""Tiny, locally built GPT-2 models for the demo and the test fixtures: no hub, a few seconds of CPU each.

`build_base_model` makes a "base model" (byte-level BPE tokenizer + 2-layer GPT-2, briefly pretrained on
general English); `finetune` teaches it the bundled contract-clause task (lease / nda / employment) and leaves
a complete checkpoint folder with the Trainer's `trainer_state.json`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.utils import logging as hf_logging

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "Clause: {text}\nType:"
COMPLETION_TEMPLATE = " {label}\n"
EOS_TOKEN = "<|endoftext|>"
LABELS = ("lease", "nda", "employment")
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples" / "contracts"
MAX_POSITIONS = 128
IGNORE_INDEX = -100  # label id the loss skips: padding, and the prompt when fine-tuning


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read one JSON object per non-blank line."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def format_example(text: str, label: str) -> tuple[str, str]:
    """Return the (prompt, completion) pair the model is fine-tuned on and evaluated with."""
    return PROMPT_TEMPLATE.format(text=text), COMPLETION_TEMPLATE.format(label=label)


def train_tokenizer(texts: Iterable[str], out_dir: Path, *, vocab_size: int = 768) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE on `texts` and save it to `out_dir`; no pad token by design."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def _encode(tokenizer: PreTrainedTokenizerFast, prompt: str, completion: str) -> dict[str, list[int]]:
    """Token ids of prompt + completion; the loss covers the completion only (all of it without a prompt)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + completion_ids)[:MAX_POSITIONS]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:MAX_POSITIONS]
    return {"input_ids": input_ids, "labels": labels}


def _examples(
    tokenizer: PreTrainedTokenizerFast, path: Path, limit: int | None = None
) -> list[dict[str, list[int]]]:
    """Encode the first `limit` JSONL rows: a labelled clause as prompt + completion, other text + eos."""
    return [
        _encode(tokenizer, *format_example(row["text"], row["label"]))
        if "label" in row
        else _encode(tokenizer, "", row["text"] + EOS_TOKEN)
        for row in load_jsonl(path)[:limit]
    ]


@contextmanager
def _quiet_single_thread() -> Iterator[None]:
    """Hide transformers' progress bars and run torch on one thread for the block, then restore both.

    For a model this small one thread is as fast, stays fast on busy CPUs (two threads ran 10x slower under
    load) and gives the same numbers on any machine.
    """
    bars, threads = hf_logging.is_progress_bar_enabled(), torch.get_num_threads()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()


class _PadCollator:
    """Right-pads a batch with the eos id (there is no pad token) and masks the padding out of the loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_id] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
            batch["labels"].append(f["labels"] + [IGNORE_INDEX] * pad)
        return {key: torch.tensor(value) for key, value in batch.items()}


def _train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    out_dir: Path,
    train: Sequence[dict[str, list[int]]],
    evaluation: Sequence[dict[str, list[int]]] | None,
    **overrides: Any,
) -> Trainer:
    """Run the Trainer on CPU (same numbers on every machine), then save model and tokenizer to `out_dir`."""
    args = TrainingArguments(
        output_dir=str(out_dir),
        eval_strategy="steps" if evaluation is not None else "no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_level="warning",
        use_cpu=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        per_device_eval_batch_size=64,
        **overrides,
    )
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=_PadCollator(tokenizer.eos_token_id),
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
    )
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's name maps to no loss; this silences the warning
    trainer.remove_callback(PrinterCallback)  # with disable_tqdm it would print every log dict to stdout
    started = time.perf_counter()
    with _quiet_single_thread():
        trainer.train()
        model.config.use_cache = True  # the Trainer switches the cache off; generation wants it back
        trainer.save_model(str(out_dir))
    elapsed = time.perf_counter() - started
    logger.info("trained %s: %d steps in %.1fs", out_dir, trainer.state.global_step, elapsed)
    return trainer


def build_base_model(
    out_dir: Path,
    *,
    seed: int = 0,
    pretrain_steps: int = 150,
    general_path: Path = EXAMPLES_DIR / "general.jsonl",
    train_path: Path = EXAMPLES_DIR / "train.jsonl",
) -> Path:
    """Train a tokenizer and a 2-layer GPT-2, pretrain it briefly on general English, save to `out_dir`."""
    out_dir = Path(out_dir)
    general = [row["text"] for row in load_jsonl(general_path)]
    clauses = ["".join(format_example(row["text"], row["label"])) for row in load_jsonl(train_path)]
    tokenizer = train_tokenizer(general + clauses, out_dir)
    set_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MAX_POSITIONS,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    _train(
        model,
        tokenizer,
        out_dir,
        _examples(tokenizer, general_path),
        None,
        max_steps=pretrain_steps,
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        warmup_steps=10,
        logging_steps=25,
        seed=seed,
    )
    return out_dir


def finetune(
    base_dir: Path,
    out_dir: Path,
    *,
    train_path: Path = EXAMPLES_DIR / "train.jsonl",
    validation_path: Path = EXAMPLES_DIR / "validation.jsonl",
    general_path: Path = EXAMPLES_DIR / "general.jsonl",
    replay_rows: int = 20,
    epochs: float = 16.0,
    max_steps: int = -1,
    learning_rate: float = 2e-3,
    batch_size: int = 16,
    seed: int = 0,
    eval_steps: int = 20,
    logging_steps: int = 10,
    train_limit: int | None = None,
) -> Path:
    """Fine-tune `base_dir` on the contract clauses (loss on completions only) into a checkpoint at `out_dir`.

    The first `replay_rows` general texts are mixed in with the full LM loss so the tiny model keeps some
    English (0: none). `train_limit` keeps the first clauses only; `max_steps` > 0 overrides `epochs`.
    """
    if train_limit is not None and train_limit < 1:
        raise ValueError(f"train_limit must be a positive number of rows, got {train_limit}")
    if replay_rows < 0:
        raise ValueError(f"replay_rows must be 0 or more, got {replay_rows}")
    out_dir = Path(out_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base_dir)
    set_seed(seed)
    with _quiet_single_thread():
        model = AutoModelForCausalLM.from_pretrained(base_dir)
    trainer = _train(
        model,
        tokenizer,
        out_dir,
        _examples(tokenizer, train_path, train_limit) + _examples(tokenizer, general_path, replay_rows),
        _examples(tokenizer, validation_path),
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        eval_steps=eval_steps,
        logging_steps=logging_steps,
        seed=seed,
        data_seed=seed,
    )
    trainer.save_state()  # trainer_state.json, with the loss / eval_loss log_history
    return out_dir


def finetune_overfit(base_dir: Path, out_dir: Path, *, seed: int = 0) -> Path:
    """Fine-tune far too long on 12 clauses: the demo's bad checkpoint, whose eval_loss turns and rises."""
    return finetune(
        base_dir,
        out_dir,
        train_limit=12,
        replay_rows=0,
        epochs=300,
        eval_steps=10,
        logging_steps=10,
        seed=seed,
    )


# A chat template that writes the beginning-of-text token itself, as Llama-style templates do.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<|end|>\n{% else %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def finetune_chat(base_dir: Path, out_dir: Path, *, epochs: float = 12.0, seed: int = 0) -> Path:
    """Fine-tune `base_dir` on the clauses as chat turns (user: the prompt, assistant: the label), with
    :data:`CHAT_TEMPLATE` saved in the tokenizer config: a tiny instruction-tuned chat model."""
    out_dir = Path(out_dir)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(base_dir)
    tokenizer.chat_template = CHAT_TEMPLATE
    train = []
    for row in load_jsonl(EXAMPLES_DIR / "train.jsonl"):
        user = [{"role": "user", "content": PROMPT_TEMPLATE.format(text=row["text"])}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        train.append(_encode(tokenizer, str(prompt), f"{row['label']}<|end|>\n"))
    set_seed(seed)
    with _quiet_single_thread():
        model = AutoModelForCausalLM.from_pretrained(base_dir)
    _train(
        model,
        tokenizer,
        out_dir,
        train,
        None,
        num_train_epochs=epochs,
        learning_rate=2e-3,
        per_device_train_batch_size=16,
        logging_steps=10,
        seed=seed,
        data_seed=seed,
    )
    return out_dir
