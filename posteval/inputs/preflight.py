"""Checks that a checkpoint can really be evaluated, run while resolving, before any run row exists.

Fingerprinting a folder proves its files exist; it does not prove the model loads. Without these
checks a truncated weight file, a config whose architecture does not fit the weights (transformers then
initialises the missing weights at random and the run "succeeds" with chance accuracy), a broken
tokenizer, a CUDA device that is not there or an unset API-key variable were found only by the model
stage, after the run row existed, as a failed run and a raw exit-3 message. Each is bad input: it is
answered here as one CheckpointError / InputError line (exit 2).

The architecture check instantiates the model on the meta device, so it costs a config parse and the
weight files' headers, never the weights themselves.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from posteval.errors import CheckpointError, InputError
from posteval.hashing import path_stamp
from posteval.inputs.checkpoint import CheckpointInfo, content_files
from posteval.remembered import remembered
from posteval.settings import get_settings

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
SHOWN = 5  # names listed in a message before "and N more"
# What loading a checkpoint depends on besides its files: a remembered check is redone after an upgrade.
LOADING_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "peft")

_passed: set[tuple[str, str, str]] = set()  # (location, fingerprint, device) already checked


def preflight(info: CheckpointInfo) -> None:
    """Every check that applies to ``info``: device and weights, config and tokenizer, or the API key.

    A checkpoint that passed once in this process (same content, same device) is not checked again.
    """
    settings = get_settings()
    key = (info.location, info.fingerprint, settings.device)
    if key in _passed:
        return
    if info.runner == "openai":
        check_api_key(settings.openai_api_key_env)
    else:
        check_device(settings.device)
        check_hf_folder(info)
    _passed.add(key)


def check_device(requested: str) -> None:
    """POSTEVAL_DEVICE names a device this machine has ("auto" and "cpu" always do)."""
    kind, _, index = requested.partition(":")
    if kind not in ("cuda", "mps"):
        return
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(
                f"POSTEVAL_DEVICE={requested}: this machine has no CUDA device (torch {torch.__version__} "
                "sees none); use auto or cpu"
            )
        if index and int(index) >= count:
            raise InputError(
                f"POSTEVAL_DEVICE={requested}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"POSTEVAL_DEVICE={requested}: Apple's MPS is not available here; use auto or cpu")


def check_api_key(variable: str | None) -> None:
    """The variable POSTEVAL_OPENAI_API_KEY_ENV names is set (its value is never read into a message)."""
    if variable is not None and not os.environ.get(variable):
        raise InputError(
            f"POSTEVAL_OPENAI_API_KEY_ENV names the variable {variable}, which is not set: "
            f"export {variable} with the endpoint's API key"
        )


def check_hf_folder(info: CheckpointInfo) -> None:
    """Weight files whole, config known, weights fitting the architecture, tokenizer loading.

    The weight files' headers are read every time (no library needed); the architecture and tokenizer
    checks, which import transformers, are remembered for the folders' unchanged files
    (:mod:`posteval.remembered`): a re-run of the same checkpoint imports neither torch nor transformers.
    """
    folders = [info.path] if info.base_path is None else [info.path, info.base_path]
    for folder in folders:
        for path in content_files(folder):
            check_weight_file(folder, path)
    model_folder = info.base_path if info.is_adapter and info.base_path is not None else info.path
    _passed_before("architecture", model_folder, check_architecture)
    tokenizer_folder = info.path
    if info.is_adapter and info.base_path is not None and not _has_tokenizer(info.path):
        tokenizer_folder = info.base_path
    _passed_before("tokenizer", tokenizer_folder, check_tokenizer)


def _passed_before(kind: str, folder: Path, check: Callable[[Path], None]) -> None:
    """``check(folder)``, unless it passed before on the folder's files as they are now."""

    def passes() -> bool:
        check(folder)
        return True

    remembered(kind, [path_stamp(folder, recursive=False)], passes, libraries=LOADING_LIBRARIES)


def check_weight_file(folder: Path, path: Path) -> None:
    """A safetensors file's header is whole and its data as long as the header says; an index names
    files that exist; a torch .bin zip archive has its central directory (a truncated one does not)."""
    name = path.name
    if name.endswith(".safetensors"):
        _check_safetensors(folder, path)
    elif name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint {folder}: {name} is not a weight index (expected a 'weight_map' object): {exc}"
            ) from exc
        absent = [shard for shard in shards if not (folder / shard).is_file()]
        if absent:
            raise CheckpointError(f"checkpoint {folder}: {name} names missing weight files {_names(absent)}")
    elif name.endswith(".bin"):
        with path.open("rb") as handle:
            magic = handle.read(2)
        if not magic:
            raise CheckpointError(f"checkpoint {folder}: {name} is empty (0 bytes)")
        if magic == b"PK" and not zipfile.is_zipfile(path):  # torch.save's zip format, cut short
            raise CheckpointError(f"checkpoint {folder}: {name} is truncated or damaged (no whole archive)")


def _check_safetensors(folder: Path, path: Path) -> None:
    size = path.stat().st_size
    problem = None
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            problem = f"is {size} bytes long, too short for a safetensors header"
        else:
            length = int.from_bytes(head, "little")
            if length > min(size - 8, MAX_HEADER_BYTES):
                problem = f"is truncated or damaged (its header claims {length} bytes; the file has {size})"
            else:
                try:
                    header = json.loads(handle.read(length))
                    tensors = [entry for key, entry in header.items() if key != "__metadata__"]
                    ends = [int(entry["data_offsets"][1]) for entry in tensors]
                except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                    problem = f"has a damaged header ({type(exc).__name__}: {exc})"
                else:
                    expected = 8 + length + max(ends, default=0)
                    if expected != size:
                        problem = (
                            f"is truncated or damaged (its header describes {expected} bytes; "
                            f"the file has {size})"
                        )
    if problem:
        raise CheckpointError(f"checkpoint {folder}: {path.name} {problem}")


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load report and progress bars stay out of the terminal: our message says it all."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def check_architecture(folder: Path) -> None:
    """config.json names a known causal LM whose every weight the files hold, and nothing else.

    Weights the architecture ties (an LM head shared with the embeddings) are not missing; transformers'
    load report already leaves them out. Loading on the meta device reads the headers only.
    """
    from transformers import AutoModelForCausalLM

    try:
        with _quiet_transformers():
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                str(folder), device_map="meta", output_loading_info=True, ignore_mismatched_sizes=True
            )
        model, report = loaded
    except Exception as exc:  # transformers raises ValueError, OSError, RuntimeError, KeyError...
        raise CheckpointError(f"checkpoint {folder}: cannot load the model: {_reason(exc)}") from exc
    problems = load_report_problems(report)
    if problems:
        model_type = getattr(model.config, "model_type", "?")
        raise CheckpointError(
            f"checkpoint {folder}: the weights do not fit {type(model).__name__} (config.json model_type "
            f"{model_type!r}): weights {problems}; evaluating it would use random weights"
        )


def load_report_problems(report: dict[str, Any]) -> str:
    """What transformers' load report (``output_loading_info=True``) found wrong, or "" when nothing."""
    problems = []
    for kind, keys in (
        ("missing", report.get("missing_keys")),
        ("unexpected", report.get("unexpected_keys")),
        ("of the wrong shape", [key for key, *_ in report.get("mismatched_keys") or ()]),
    ):
        if keys:
            problems.append(f"{len(keys)} {kind} ({_names(sorted(keys))})")
    return "; ".join(problems)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (*TOKENIZER_FILES, "tokenizer_config.json"))


def check_tokenizer(folder: Path) -> None:
    """The folder has tokenizer files, they load, and they turn text into tokens."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise CheckpointError(
            f"checkpoint {folder}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer with the model (tokenizer.save_pretrained)"
        )
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers():
            tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))
            ids = tokenizer("posteval checks the tokenizer").input_ids
    except Exception as exc:  # tokenizers raises its own Exception subclasses, JSON errors, OSError...
        raise CheckpointError(f"checkpoint {folder}: the tokenizer does not load: {_reason(exc)}") from exc
    if not ids or len(tokenizer) < 2:
        raise CheckpointError(f"checkpoint {folder}: the tokenizer has no vocabulary (text encodes to {ids})")
    if tokenizer.pad_token is None and tokenizer.eos_token is None:  # what the runner pads with
        raise CheckpointError(f"checkpoint {folder}: the tokenizer has neither a pad nor an eos token")


def _reason(exc: BaseException) -> str:
    """An exception's first sentence, or its class name when it has no text."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return first.split(". ")[0].rstrip(".") if len(first) > 200 else first.rstrip(".")


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
