"""Model backends behind one protocol (:class:`posteval.runners.base.Runner`)."""

from __future__ import annotations

from functools import lru_cache

from posteval.checkpoint import CheckpointInfo
from posteval.runners.base import Runner
from posteval.settings import get_settings


@lru_cache(maxsize=2)
def get_runner(checkpoint: CheckpointInfo, device: str = "auto", dtype: str = "auto") -> Runner:
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
        )
    from posteval.runners.hf import HFRunner

    return HFRunner(checkpoint, device=device, dtype=dtype)
