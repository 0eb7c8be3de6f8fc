"""Running models: backends behind one protocol (:class:`posteval.runners.base.Runner`), transformers
and PEFT (hf) and OpenAI-compatible endpoints (openai), with batching and the tokenization policy.

May import the foundations and posteval.inputs (checkpoint info, preflight); never the database, judging,
the pipeline, the face, the flows or Prefect.
"""

from __future__ import annotations

import glob
import os
import socket
from functools import lru_cache
from pathlib import Path

from posteval.errors import RunnerError
from posteval.hashing import path_stamp
from posteval.inputs.checkpoint import CheckpointInfo, tokenizer_path
from posteval.remembered import forget, remembered
from posteval.runners.base import BosMode, Runner
from posteval.settings import get_settings


def tokenization_policy(checkpoint: CheckpointInfo, bos: BosMode = "auto") -> dict[str, object]:
    """The resolved tokenization policy a runner for ``checkpoint`` uses, as plain data (for identity).

    Resolved from the tokenizer alone (a served model: from ``bos_text``), without loading the model.
    """
    if checkpoint.runner == "openai":
        from posteval.runners.openai import served_policy

        return served_policy(get_settings().openai_bos_text, bos).describe()
    return _hf_policy(checkpoint, bos)


@lru_cache(maxsize=8)
def _hf_policy(checkpoint: CheckpointInfo, bos: BosMode) -> dict[str, object]:
    """Remembered for the tokenizer folder's unchanged files (:mod:`posteval.remembered`)."""

    def resolve() -> dict[str, object]:
        from posteval.runners.hf import checkpoint_policy

        return checkpoint_policy(checkpoint, bos).describe()

    folder = Path(tokenizer_path(checkpoint))
    stamp = path_stamp(folder, recursive=False)
    return remembered("tokenization", [stamp, bos], resolve, libraries=("transformers", "tokenizers"))


def _machine() -> list[object]:
    """What decides the dtype "auto" gives here besides torch: the host, the CUDA devices visible to this
    process and the NVIDIA driver's version (an upgraded or broken driver is a new key)."""
    driver = Path("/proc/driver/nvidia/version")
    return [
        socket.gethostname(),
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        sorted(glob.glob("/dev/nvidia*")),
        driver.read_text(errors="replace") if driver.is_file() else None,
    ]


def dtype_name(device: str = "auto", dtype: str = "auto") -> str:
    """The torch dtype (as ``str(torch.float32)``) a runner asked for ``device`` and ``dtype`` uses here.

    Remembered per machine (:func:`_machine`, the torch version), so identity needs no torch import; the
    model stage checks it against the loaded runner's (:func:`check_dtype`).
    """

    def resolve() -> str:
        from posteval.runners.hf import pick_device, pick_dtype

        return str(pick_dtype(pick_device(device), dtype))

    return remembered("dtype", [device, dtype, *_machine()], resolve, libraries=("torch",))


def check_dtype(runner: Runner, device: str, dtype: str) -> None:
    """The loaded model computes in the dtype the run's identity names; else fail before any output is
    stored under a config hash that does not describe it (the machine's GPU changed since the dtype was
    remembered). The stale answer is dropped, so evaluating again resolves the run with the real one."""
    loaded = getattr(runner, "dtype", None)
    if loaded is None:  # a served model: no dtype of ours
        return
    expected = dtype_name(device, dtype)
    if str(loaded) != expected:
        forget("dtype", [device, dtype, *_machine()], libraries=("torch",))
        raise RunnerError(
            f"the model loaded as {loaded} on {getattr(runner, 'device', '?')}, but this machine was "
            f"remembered to give {expected} for device={device} dtype={dtype} (its GPU changed?): "
            "that answer is dropped; evaluate again"
        )


@lru_cache(maxsize=2)
def get_runner(
    checkpoint: CheckpointInfo, device: str = "auto", dtype: str = "auto", bos: BosMode = "auto"
) -> Runner:
    """One loaded backend per checkpoint per process, shared by every dataset task of a flow run."""
    if checkpoint.runner == "openai":
        from posteval.runners.openai import OpenAIRunner

        settings = get_settings()
        assert checkpoint.endpoint is not None and checkpoint.served_model is not None
        return OpenAIRunner(
            checkpoint.endpoint,
            checkpoint.served_model,
            api_key_env=settings.openai_api_key_env,
            timeout=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
            bos_text=settings.openai_bos_text,
            bos=bos,
        )
    from posteval.runners.hf import HFRunner

    return HFRunner(checkpoint, device=device, dtype=dtype, bos=bos)
