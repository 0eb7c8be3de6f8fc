"""Resolve: the one place a run's inputs are validated and fingerprinted, before any run row exists.

The checkpoint is fingerprinted and preflighted (weights whole and fitting the architecture, tokenizer,
device, API key), the suite loaded and checked, the base model resolved the same way, and every dataset
loaded, validated row by row and fingerprinted. The CLI calls :func:`resolve` before Prefect starts (bad
input costs a second and prints one line) and hands the result to the flow; the flow resolves only when it
is given strings (deployments, events, the Python API).
"""

from __future__ import annotations

from dataclasses import dataclass

from posteval.inputs.checkpoint import CheckpointInfo, resolve_checkpoint
from posteval.inputs.preflight import preflight
from posteval.inputs.suite import LoadedSuite, load_suite
from posteval.pipeline.datasets import DatasetRef, prepare_dataset
from posteval.runners.chat import prompting, resolve_chat


@dataclass(frozen=True)
class Resolved:
    """A run's inputs, resolved: the checkpoint, the suite, the suite's base model and every dataset."""

    checkpoint: CheckpointInfo
    suite: LoadedSuite
    base: CheckpointInfo | None
    datasets: tuple[DatasetRef, ...]


def resolve_model(
    path: str, *, model_name: str | None = None, adapter_base: str | None = None, step: int | None = None
) -> CheckpointInfo:
    """Fingerprint a checkpoint (folder, adapter or served model) and prove it can be evaluated."""
    info = resolve_checkpoint(path, model_name=model_name, base_path=adapter_base, step=step)
    preflight(info)
    return info


def resolve(
    checkpoint: str,
    suite: str,
    *,
    model_name: str | None = None,
    adapter_base: str | None = None,
    step: int | None = None,
) -> Resolved:
    """Every input of a run, validated in the order a user fixes them: checkpoint, suite, base, datasets.

    Raises the PostevalError subclass of the first problem (exit 2), naming file, line or field.
    """
    info = resolve_model(checkpoint, model_name=model_name, adapter_base=adapter_base, step=step)
    loaded = load_suite(suite)
    # Chat templates are decided once, from the evaluated checkpoint, and apply to the base model too.
    loaded = loaded.model_copy(update={"suite": resolve_chat(loaded.suite, info)})
    base = resolve_model(loaded.suite.base_model) if loaded.suite.base_model else None
    datasets = tuple(prepare_dataset(spec) for spec in loaded.suite.all_datasets())
    for ref in datasets:
        prompting(loaded.suite, ref.spec)  # draws the few-shot examples: a bad source fails here
    return Resolved(checkpoint=info, suite=loaded, base=base, datasets=datasets)
