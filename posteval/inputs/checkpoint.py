"""A checkpoint folder: validation, content fingerprint, training log, PEFT adapter detection."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from posteval.errors import CheckpointError
from posteval.hashing import fingerprint_files, sha256_json
from posteval.inputs.hub import snapshot, split_revision

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
METADATA_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
    "adapter_config.json",
)


class CheckpointInfo(BaseModel):
    """What posteval knows about a checkpoint folder; small and serialisable, passed between tasks."""

    model_config = ConfigDict(frozen=True)

    path: Path
    fingerprint: str
    model_name: str
    is_adapter: bool = False
    base_path: Path | None = None
    training_step: int | None = None
    runner: str = "hf"  # "hf" (a local folder) or "openai" (a served model)
    endpoint: str | None = None  # the openai runner's base URL
    served_model: str | None = None  # the openai runner's model name
    hub_id: str | None = None  # ORG/MODEL when named by hub id; path is then its cached snapshot
    revision: str | None = None  # the hub commit the snapshot holds

    @property
    def location(self) -> str:
        """Where the checkpoint is, as stored and accepted back by resolve_checkpoint: the folder,
        ``hf://ORG/MODEL@COMMIT``, or ``openai:MODEL@URL`` (a Path would fold the URL's ``//``)."""
        if self.runner == "openai":
            return f"{OPENAI_PREFIX}{self.served_model}@{self.endpoint}"
        if self.hub_id is not None:
            return f"{HUB_PREFIX}{self.hub_id}@{self.revision}"
        return str(self.path)


OPENAI_PREFIX = "openai:"
HUB_PREFIX = "hf://"


def resolve_served(spec: str, *, model_name: str | None = None) -> CheckpointInfo:
    """A model behind an OpenAI-compatible endpoint, named ``openai:MODEL@http://host:port/v1``.

    A served model has no files to hash: its identity is the endpoint and the model name, so whoever
    serves a new checkpoint under the same name must give it a new name (or pass --force).
    """
    model, sep, url = spec.removeprefix(OPENAI_PREFIX).rpartition("@")
    if not sep or not model or not url.startswith(("http://", "https://")):
        raise CheckpointError(
            f"served model {spec!r}: expected openai:MODEL@http://host:port/v1 (model name, then base URL)"
        )
    return CheckpointInfo(
        path=Path(spec),
        fingerprint=sha256_json(["openai", url.rstrip("/"), model]),
        model_name=model_name or model,
        runner="openai",
        endpoint=url.rstrip("/"),
        served_model=model,
    )


def _weight_files(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})


def content_files(folder: Path) -> list[Path]:
    """The files that define the model: weights, their index, config and tokenizer files."""
    adapter = (folder / "adapter_config.json").is_file()
    weights = _weight_files(folder, ADAPTER_WEIGHTS if adapter else WEIGHT_PATTERNS)
    if not weights:
        expected = (
            ADAPTER_WEIGHTS
            if adapter
            else ("model.safetensors", "pytorch_model.bin", "sharded *.safetensors")
        )
        raise CheckpointError(
            f"checkpoint {folder}: no weights found (expected one of {', '.join(expected)})"
        )
    extra = [folder / name for name in (*INDEX_FILES, *METADATA_FILES) if (folder / name).is_file()]
    return sorted({*weights, *extra})


def load_trainer_state(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The Trainer's trainer_state.json as a dict, or None and why: the one reader of that file (the
    training step at resolve time and the loss history for the health check both come through here)."""
    path = folder / "trainer_state.json"
    if not path.is_file():
        return None, f"no trainer_state.json in {folder}"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"malformed {path}: {type(exc).__name__}: {exc}"
    if not isinstance(state, dict):
        return None, f"malformed {path}: TypeError: the top level is not an object"
    return state, None


def read_trainer_state(folder: Path) -> dict[str, Any] | None:
    """The Trainer's trainer_state.json, or None when absent or unreadable (logged, never fatal)."""
    state, problem = load_trainer_state(folder)
    if problem and (folder / "trainer_state.json").is_file():
        log.warning("ignoring unreadable %s", problem.removeprefix("malformed "))
    return state


def adapter_base_path(folder: Path, override: str | Path | None = None) -> Path:
    """Where a PEFT adapter's base model lives: ``override``, else ``base_model_name_or_path``."""
    config_path = folder / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: cannot read {config_path.name}: {exc}") from exc
    raw = override or config.get("base_model_name_or_path")
    if not raw:
        raise CheckpointError(
            f"checkpoint {folder}: adapter_config.json names no base_model_name_or_path; pass the base"
        )
    base = Path(raw)
    if not base.is_absolute() and not base.exists():
        base = folder / base
    if not base.is_dir():
        raise CheckpointError(
            f"adapter {folder}: its base model {raw!r} cannot be found "
            f"(looked for the folder {base.resolve()}); pass the base path explicitly"
        )
    return base.resolve()


def tokenizer_path(checkpoint: CheckpointInfo) -> str:
    """Where the checkpoint's tokenizer lives: its folder, or an adapter's base when it has none."""
    if checkpoint.is_adapter and checkpoint.base_path is not None:
        has_tokenizer = any(
            (checkpoint.path / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")
        )
        if not has_tokenizer:
            return str(checkpoint.base_path)
    return str(checkpoint.path)


def default_model_name(folder: Path) -> str:
    """The folder's name, or its parent's for Trainer's ``checkpoint-<step>`` folders."""
    folder = folder.resolve()
    if re.fullmatch(r"checkpoint-\d+", folder.name):
        return folder.parent.name
    return folder.name


def resolve_checkpoint(
    path: str | Path,
    *,
    model_name: str | None = None,
    base_path: str | Path | None = None,
    step: int | None = None,
) -> CheckpointInfo:
    """Validate and fingerprint the checkpoint at ``path``; an adapter's fingerprint covers its base too.

    ``path`` may also name a served model, ``openai:MODEL@URL`` (see :func:`resolve_served`).
    """
    if str(path).startswith(OPENAI_PREFIX):
        return resolve_served(str(path), model_name=model_name)
    if str(path).startswith(HUB_PREFIX):
        repo_id, revision = split_revision(str(path).removeprefix(HUB_PREFIX))
        pinned = snapshot(repo_id, "model", revision)
        info = resolve_checkpoint(
            pinned.folder,
            model_name=model_name or pinned.repo_id.split("/")[-1],
            base_path=base_path,
            step=step,
        )
        return info.model_copy(update={"hub_id": pinned.repo_id, "revision": pinned.revision})
    folder = Path(path).expanduser()
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint {folder} is not a folder (expected a transformers checkpoint folder)"
        )
    is_adapter = (folder / "adapter_config.json").is_file()
    if not is_adapter and not (folder / "config.json").is_file():
        raise CheckpointError(f"checkpoint {folder}: config.json is missing")
    fingerprint = fingerprint_files(folder, content_files(folder))
    base: Path | None = None
    if is_adapter:
        base = adapter_base_path(folder, base_path)
        fingerprint = sha256_json([fingerprint, fingerprint_files(base, content_files(base))])
    state = read_trainer_state(folder)
    if step is None:  # a final model saved by save_model() has no trainer_state.json: the caller knows
        logged = state.get("global_step") if state else None
        step = logged if isinstance(logged, int) else None
    return CheckpointInfo(
        path=folder.resolve(),
        fingerprint=fingerprint,
        model_name=model_name or default_model_name(folder),
        is_adapter=is_adapter,
        base_path=base,
        training_step=step,
    )
