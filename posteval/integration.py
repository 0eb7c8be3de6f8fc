"""A transformers TrainerCallback that announces every saved checkpoint, so evaluation starts by itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from posteval import automation
from posteval.errors import PostevalError

log = logging.getLogger(__name__)

Emit = Callable[[automation.TrainingCompleted], object]


class PostevalCallback(TrainerCallback):
    """Emits ``posteval.training.completed`` on every save and at train end, from the main process only.

    At train end the event names ``final_dir`` (default ``args.output_dir``, where ``trainer.save_model()``
    writes the final model) unless the last save already announced the final step; the triggered run waits
    for the folder to be complete, so the event may go out before the files are written. A failed emit is
    logged and training goes on, unless ``strict``.
    """

    def __init__(
        self,
        suite: str | Path,
        *,
        model_name: str | None = None,
        base_model: str | Path | None = None,
        final_dir: str | Path | None = None,
        emit: Emit | None = None,
        strict: bool = False,
    ) -> None:
        self.suite = suite
        self.model_name = model_name
        self.base_model = base_model
        self.final_dir = final_dir
        self.emit: Emit = emit or automation.emit_training_completed
        self.strict = strict
        self.announced_step: int | None = None

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        folder = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        self._announce(folder, state, kwargs.get("model"))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.announced_step != state.global_step:
            self._announce(Path(str(self.final_dir or args.output_dir)), state, kwargs.get("model"))

    def _announce(self, folder: Path, state: TrainerState, model: Any) -> None:
        if not state.is_world_process_zero:
            return
        event = automation.training_completed(
            folder,
            self.suite,
            model_name=self.model_name,
            step=state.global_step,
            base_model=self.base_model or _local_base(model),
        )
        try:
            self.emit(event)
        except PostevalError as exc:
            if self.strict:
                raise
            log.warning("posteval: could not announce %s: %s", folder, exc)
            return
        self.announced_step = state.global_step


def _local_base(model: Any) -> str | None:
    """The folder the trained model was loaded from, when it is a local one."""
    path = getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(path) if path and Path(str(path)).is_dir() else None
