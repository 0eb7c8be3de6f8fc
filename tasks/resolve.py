"""Resolve stage: checkpoint, suite and datasets are validated and fingerprinted before any model work.

Thin over :func:`posteval.pipeline.resolve.resolve`, the one resolve the CLI calls too.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval.inputs.checkpoint import CheckpointInfo
from posteval.pipeline.resolve import Resolved, resolve, resolve_model


@task(name="resolve", cache_policy=NO_CACHE)
def resolve_task(
    checkpoint: str,
    suite: str,
    model_name: str | None = None,
    adapter_base: str | None = None,
    step: int | None = None,
) -> Resolved:
    """Resolve a run's inputs (``step`` overrides the training step from the log).

    The preflight checks (weights whole and fitting the architecture, tokenizer, device, API key) run
    here, so a checkpoint that cannot be evaluated is refused before the run row is registered.
    """
    return resolve(checkpoint, suite, model_name=model_name, adapter_base=adapter_base, step=step)


@task(name="resolve-checkpoint", cache_policy=NO_CACHE)
def resolve_checkpoint_task(
    path: str, model_name: str | None = None, adapter_base: str | None = None, step: int | None = None
) -> CheckpointInfo:
    """Fingerprint and preflight one checkpoint, as :func:`resolve_task` does for a run's."""
    return resolve_model(path, model_name=model_name, adapter_base=adapter_base, step=step)
