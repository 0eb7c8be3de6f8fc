"""posteval.toymodel builds a base model and fine-tunes it into a complete, working checkpoint folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from posteval import toymodel

# Measured with the defaults: 54/54 held-out clauses right (seed 0), 53/54 with seeds 1, 2 and 3;
# the threshold needs 44/54.
MIN_HELDOUT_ACCURACY = 0.8


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toymodel.build_base_model(tmp_path_factory.mktemp("toy") / "base")


@pytest.fixture(scope="module")
def checkpoint(base_dir: Path) -> Path:
    return toymodel.finetune(base_dir, base_dir.parent / "finetuned")


def _log_history(checkpoint: Path) -> list[dict[str, Any]]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def _losses(checkpoint: Path, key: str) -> list[float]:
    return [entry[key] for entry in _log_history(checkpoint) if key in entry]


def _greedy_label(model: Any, tokenizer: Any, text: str) -> str:
    """What the evaluator does: prompt, decode greedily, keep the stripped first line."""
    inputs = tokenizer(toymodel.PROMPT_TEMPLATE.format(text=text), return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    completion = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return completion.split("\n")[0].strip()


@pytest.mark.slow
def test_checkpoint_folder_holds_model_tokenizer_and_trainer_state(checkpoint: Path) -> None:
    names = {path.name for path in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "trainer_state.json" in names
    assert not [name for name in names if name.startswith("checkpoint-")]


@pytest.mark.slow
def test_trainer_state_logs_train_loss_and_eval_loss_at_several_steps(checkpoint: Path) -> None:
    assert len(_losses(checkpoint, "loss")) >= 5
    assert len(_losses(checkpoint, "eval_loss")) >= 5


@pytest.mark.slow
def test_saved_config_keeps_the_generation_cache_on(checkpoint: Path) -> None:
    assert AutoConfig.from_pretrained(checkpoint).use_cache is True


@pytest.mark.slow
def test_tokenizer_round_trips_text_and_has_no_pad_token(checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    text = "Clause: The Tenant pays €1,250 on day 3.\nType: lease\n"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.pad_token is None
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.unk_token == toymodel.EOS_TOKEN


@pytest.mark.slow
def test_greedy_generation_labels_most_heldout_clauses(checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    rows = toymodel.load_jsonl(toymodel.EXAMPLES_DIR / "heldout.jsonl")
    correct = sum(_greedy_label(model, tokenizer, row["text"]) == row["label"] for row in rows)
    assert correct / len(rows) >= MIN_HELDOUT_ACCURACY


@pytest.mark.slow
def test_overfit_run_ends_with_eval_loss_well_above_its_minimum(base_dir: Path) -> None:
    overfit = toymodel.finetune_overfit(base_dir, base_dir.parent / "overfit")
    eval_losses = _losses(overfit, "eval_loss")
    train_losses = _losses(overfit, "loss")
    # Measured: eval_loss bottoms at 0.64 (step 50) and ends at 1.52, 2.4x (seeds 1 and 2: 2.05x, 2.01x);
    # train loss falls from 5.7 to 0.003.
    assert eval_losses[-1] > 1.5 * min(eval_losses)
    assert train_losses[-1] < 0.01 * train_losses[0]


@pytest.mark.slow
def test_finetune_with_the_same_seed_logs_the_same_losses(base_dir: Path) -> None:
    runs = [
        toymodel.finetune(
            base_dir, base_dir.parent / f"repeat{i}", max_steps=4, eval_steps=2, logging_steps=2
        )
        for i in range(2)
    ]
    for key in ("loss", "eval_loss"):
        assert _losses(runs[0], key) == _losses(runs[1], key)


@pytest.mark.parametrize("option", [{"train_limit": 0}, {"replay_rows": -1}])
def test_finetune_rejects_a_negative_or_empty_row_count(tmp_path: Path, option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(option))):
        toymodel.finetune(tmp_path / "base", tmp_path / "out", **option)
