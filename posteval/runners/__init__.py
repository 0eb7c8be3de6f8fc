"""Running models: backends behind one protocol (:class:`posteval.runners.base.Runner`), transformers
and PEFT (hf) and OpenAI-compatible endpoints (openai), with batching and the tokenization policy.

May import the foundations and posteval.inputs (checkpoint info, preflight); never the database, judging,
the pipeline, the face, the flows or Prefect.
"""

from __future__ import annotations

from functools import lru_cache

from posteval.inputs.checkpoint import CheckpointInfo
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
    # The fingerprint (part of CheckpointInfo) covers the tokenizer files, so the cache cannot go stale.
    from posteval.runners.hf import checkpoint_policy

    return checkpoint_policy(checkpoint, bos).describe()


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
