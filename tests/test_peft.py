"""PEFT / LoRA adapters load onto their base; the fingerprint covers adapter and base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from posteval.errors import CheckpointError
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.runners.base import GenerationOptions
from posteval.runners.hf import HFRunner
from tests.helpers import PROMPT, heldout_rows, plain_greedy


@pytest.fixture(scope="module")
def adapter(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the base with non-zero weights, so it changes the model's outputs."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_checkpoint)
    lora = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=32, target_modules=["c_attn"], init_lora_weights=False)
    )
    folder = tmp_path_factory.mktemp("adapters") / "lora"
    lora.save_pretrained(folder)
    return folder


def test_adapter_is_detected_with_its_base(adapter: Path, base_checkpoint: Path) -> None:
    info = resolve_checkpoint(adapter)
    assert (info.is_adapter, info.base_path) == (True, base_checkpoint.resolve())
    assert info.fingerprint != resolve_checkpoint(base_checkpoint).fingerprint


def test_fingerprint_covers_the_base(adapter: Path, base_checkpoint: Path, tmp_path: Path) -> None:
    other_base = tmp_path / "other-base"
    shutil.copytree(base_checkpoint, other_base)
    config = json.loads((other_base / "config.json").read_text())
    (other_base / "config.json").write_text(json.dumps({**config, "layer_norm_epsilon": 1e-6}))
    assert (
        resolve_checkpoint(adapter, base_path=other_base).fingerprint
        != resolve_checkpoint(adapter).fingerprint
    )


def test_adapter_outputs_equal_the_merged_model(adapter: Path, base_checkpoint: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_checkpoint), adapter)
    merged_dir = tmp_path / "merged"
    merged.merge_and_unload().save_pretrained(merged_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base_checkpoint / name, merged_dir / name)
    prompts = [PROMPT.format(**row) for row in heldout_rows(4)]
    runner = HFRunner(resolve_checkpoint(adapter))
    got = {
        i: out
        for idx, outs in runner.generate(prompts, GenerationOptions(6, ("\n",)), batch_size=2)
        for i, out in zip(idx, outs, strict=True)
    }
    assert [got[i] for i in range(len(prompts))] == plain_greedy(merged_dir, prompts, 6)
    assert plain_greedy(merged_dir, prompts, 6) != plain_greedy(base_checkpoint, prompts, 6)


def test_adapter_whose_base_is_missing_names_both_paths(adapter: Path, tmp_path: Path) -> None:
    moved = tmp_path / "lora"
    shutil.copytree(adapter, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "/no/such/base"})
    )
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(moved)
    assert str(info.value) == (
        f"adapter {moved}: its base model '/no/such/base' cannot be found "
        "(looked for the folder /no/such/base); pass the base path explicitly"
    )
