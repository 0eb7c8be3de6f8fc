"""The TrainerCallback announces each saved checkpoint, and the final model once, from a real Trainer run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from posteval.automation import TrainingCompleted, incomplete_reason
from posteval.errors import PostevalError
from posteval.integration import PostevalCallback


class Recorder:
    """An emitter that keeps the events and notes whether each folder was complete when announced."""

    def __init__(self) -> None:
        self.events: list[TrainingCompleted] = []
        self.complete: list[bool] = []

    def __call__(self, event: TrainingCompleted) -> None:
        self.events.append(event)
        self.complete.append(incomplete_reason(Path(event.checkpoint)) is None)


def _train(base: Path, out: Path, callback: PostevalCallback, **overrides: Any) -> Trainer:
    torch.manual_seed(0)
    rows = [{"input_ids": list(range(5 + i, 21 + i)), "labels": list(range(5 + i, 21 + i))} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=4,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        log_level="error",
        **overrides,
    )
    model = AutoModelForCausalLM.from_pretrained(base)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])
    trainer.train()
    return trainer


def test_every_save_is_announced_after_its_files_are_written_and_train_end_adds_nothing(
    base_checkpoint: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    suite = tmp_path / "suite.yaml"
    out = tmp_path / "ft-run"
    _train(base_checkpoint, out, PostevalCallback(suite, emit=recorder), max_steps=4, save_steps=2)
    assert recorder.events == [
        TrainingCompleted(str(out / f"checkpoint-{s}"), str(suite), "ft-run", s, str(base_checkpoint))
        for s in (2, 4)
    ]
    assert recorder.complete == [True, True]


def test_without_saves_train_end_announces_the_final_folder(base_checkpoint: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    final = tmp_path / "final-model"
    callback = PostevalCallback(
        "suite.yaml", model_name="contracts", base_model="base", final_dir=final, emit=recorder
    )
    _train(base_checkpoint, tmp_path / "out", callback, max_steps=2, save_strategy="no")
    assert recorder.events == [
        TrainingCompleted(
            str(final), str(Path("suite.yaml").resolve()), "contracts", 2, str(Path("base").resolve())
        )
    ]


def test_a_failed_announcement_is_logged_and_training_goes_on(
    base_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(event: TrainingCompleted) -> None:
        raise PostevalError("cannot send posteval.training.completed to the Prefect server at http://x/api")

    with caplog.at_level(logging.WARNING, logger="posteval.integration"):
        trainer = _train(
            base_checkpoint,
            tmp_path / "out",
            PostevalCallback("s.yaml", emit=unreachable),
            max_steps=2,
            save_strategy="no",
        )
    assert trainer.state.global_step == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"posteval: could not announce {tmp_path / 'out'}: cannot send posteval.training.completed "
        "to the Prefect server at http://x/api"
    ]
