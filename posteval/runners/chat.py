"""Chat templates: whether a dataset is rendered through one, and the rendered prompts.

The setting is resolved once per run from the evaluated checkpoint (``chat: auto`` is on when its
tokenizer, or the suite's ``tokenizer:`` folder for a served model, has a template) and written into the
suite, so the base model is shown exactly the same text. Rendering is transformers'
``apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``; the runners then tokenize
the text without adding special tokens again (a template that writes BOS gets no second one), see
:func:`posteval.runners.base.templated_prompts`. Multiple choice scores each choice as the start of the
assistant turn, with no target delimiter (lm-evaluation-harness's convention under a template).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from posteval.errors import CheckpointError, InputError
from posteval.hashing import path_stamp, sha256_json
from posteval.inputs.checkpoint import CheckpointInfo, tokenizer_path
from posteval.inputs.data import LoadedDataset
from posteval.inputs.prompting import Shots, chat_messages, draw_shots, shot_spec, text_prompt
from posteval.inputs.suite import DatasetSpec, Suite
from posteval.remembered import remembered

TOKENIZER_LIBRARIES = ("transformers", "tokenizers")
SERVER_TEMPLATE = "server"  # a served model renders its own template (/v1/chat/completions)


@lru_cache(maxsize=4)
def _tokenizer(folder: str) -> Any:
    from posteval.runners.hf import load_tokenizer

    try:
        return load_tokenizer(folder)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer at {folder}: {exc}") from exc


def checkpoint_template(folder: Path) -> str | None:
    """The chat template of the tokenizer in ``folder`` (tokenizer_config.json or chat_template.jinja),
    remembered for the folder's unchanged files (:mod:`posteval.remembered`)."""

    def load() -> str | None:
        template = _tokenizer(str(folder)).chat_template
        return template if isinstance(template, str) and template else None

    # transformers also reads named templates from additional_chat_templates/*.jinja
    stamp = [path_stamp(folder, recursive=False), path_stamp(folder / "additional_chat_templates")]
    return remembered("chat template", stamp, load, libraries=TOKENIZER_LIBRARIES)


def resolve_chat(suite: Suite, checkpoint: CheckpointInfo) -> Suite:
    """``suite`` with every dataset's ``chat`` decided for ``checkpoint`` and the rendering tokenizer set.

    Raises InputError for ``chat: true`` with no template to render, and for chat with loglikelihood
    scoring on a served model without a ``tokenizer:`` folder (its chat endpoint returns no prompt
    log-probs, so the client must render and score through /v1/completions).
    """
    folder = suite.tokenizer
    if folder is None and checkpoint.runner == "hf":
        folder = Path(tokenizer_path(checkpoint))
    template = checkpoint_template(folder) if folder is not None else None
    datasets = []
    for spec in suite.datasets:
        wanted = spec.chat if spec.chat is not None else suite.chat
        if spec.kind == "perplexity":
            datasets.append(spec.model_copy(update={"chat": False}))
            continue
        on = (template is not None) if wanted == "auto" else bool(wanted)
        if on and template is None:
            if checkpoint.runner != "openai":
                raise InputError(
                    f"dataset {spec.name!r}: chat: true, but the tokenizer at {folder} has no chat template"
                )
            if spec.scoring == "loglikelihood":
                raise InputError(
                    f"dataset {spec.name!r}: chat with scoring: loglikelihood on served model "
                    f"{checkpoint.served_model!r} needs a 'tokenizer:' folder in the suite (the chat "
                    "endpoint returns no prompt log-probs; posteval renders the template and scores "
                    "through /v1/completions)"
                )
        datasets.append(spec.model_copy(update={"chat": on, "system": spec.system or suite.system}))
    return suite.model_copy(update={"datasets": datasets, "tokenizer": folder})


@dataclass(frozen=True)
class Prompting:
    """How one dataset's prompts are built: the chat template (its text, or the server's) and the shots."""

    chat: bool
    template: str | None
    system: str | None
    shots: Shots

    def describe(self) -> dict[str, object] | None:
        """Part of the output settings: template hash, system message, few-shot draw (None: plain prompts)."""
        if not self.chat and not self.shots.pairs:
            return None
        digest = self.template if self.template in (None, SERVER_TEMPLATE) else sha256_json(self.template)
        return {
            "chat": self.chat,
            "template_sha256": digest if self.chat else None,
            "system": self.system if self.chat else None,
            "fewshot": self.shots.describe(),
        }

    @property
    def server_side(self) -> bool:
        """Whether the served model renders the template itself (messages go to /v1/chat/completions)."""
        return self.chat and self.template == SERVER_TEMPLATE


def prompting(suite: Suite, spec: DatasetSpec) -> Prompting:
    """The resolved chat setting and few-shot draw of ``spec`` (after :func:`resolve_chat`)."""
    chat = spec.kind != "perplexity" and spec.chat is True
    template: str | None = None
    if chat:
        template = checkpoint_template(suite.tokenizer) if suite.tokenizer is not None else None
        template = template or SERVER_TEMPLATE
    shots = _shots(spec) if spec.kind != "perplexity" else Shots()
    return Prompting(chat=chat, template=template, system=spec.system if chat else None, shots=shots)


@lru_cache(maxsize=32)
def _shots_cached(spec_json: str, stamp: tuple[str, ...]) -> Shots:
    """The draw for the source's files as ``stamp`` names them (an edited source is drawn from again, in
    this process too); remembered across processes for local files."""
    spec = DatasetSpec.model_validate_json(spec_json)
    if not stamp:  # a hub source: its revision is resolved anew each time
        return draw_shots(spec)
    return remembered(
        "few-shot draw",
        [spec_json, stamp],
        lambda: draw_shots(spec),
        libraries=("datasets", "pyarrow"),
        encode=dataclasses.asdict,
        decode=lambda stored: Shots(
            pairs=tuple((prompt, answer) for prompt, answer in stored["pairs"]),
            keys=tuple(stored["keys"]),
            source_fingerprint=stored["source_fingerprint"],
        ),
    )


def _shots(spec: DatasetSpec) -> Shots:
    if spec.fewshot is None:
        return Shots()
    return _shots_cached(spec.model_dump_json(), path_stamp(shot_spec(spec).path))


def render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The conversation as text through the tokenizer's template, ending where the assistant answers."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text)


def model_inputs(suite: Suite, loaded: LoadedDataset) -> tuple[list[str], Prompting]:
    """Every example's prompt as the model sees it (template and shots applied), and how it was built.

    For a served model that renders its own template the texts are the user turns; the messages are
    rebuilt by :func:`served_messages`.
    """
    how = prompting(suite, loaded.spec)
    prompts = loaded.prompts()
    if not how.chat:
        return [text_prompt(p, how.shots, loaded.spec.target_delimiter) for p in prompts], how
    if how.server_side:
        return prompts, how
    assert suite.tokenizer is not None
    tokenizer = _tokenizer(str(suite.tokenizer))
    return [render(tokenizer, chat_messages(p, how.shots, how.system)) for p in prompts], how


def served_messages(prompts: list[str], how: Prompting) -> list[list[dict[str, str]]]:
    """The conversations a served model renders itself (/v1/chat/completions)."""
    return [chat_messages(p, how.shots, how.system) for p in prompts]
