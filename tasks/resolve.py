"""Resolve stage: checkpoint, suite and datasets are validated and fingerprinted before any model work."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from posteval import pipeline
from posteval.inputs.checkpoint import CheckpointInfo, resolve_checkpoint
from posteval.inputs.preflight import preflight
from posteval.inputs.suite import DatasetSpec, LoadedSuite, load_suite


@task(name="resolve-checkpoint", cache_policy=NO_CACHE)
def resolve_checkpoint_task(
    path: str, model_name: str | None = None, adapter_base: str | None = None, step: int | None = None
) -> CheckpointInfo:
    """Fingerprint the checkpoint folder and read its training step (``step`` overrides the log's).

    The preflight checks (weights whole and fitting the architecture, tokenizer, device, API key) run
    here, so a checkpoint that cannot be evaluated is refused before the run row is registered.
    """
    info = resolve_checkpoint(path, model_name=model_name, base_path=adapter_base, step=step)
    preflight(info)
    return info


@task(name="load-suite", cache_policy=NO_CACHE)
def load_suite_task(path: str) -> LoadedSuite:
    """Load and validate the suite file."""
    return load_suite(path)


@task(name="load-dataset", task_run_name="load-{spec.name}", cache_policy=NO_CACHE)
def load_dataset_task(spec: DatasetSpec) -> pipeline.DatasetRef:
    """Load, validate and fingerprint one dataset."""
    return pipeline.prepare_dataset(spec)
