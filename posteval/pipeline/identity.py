"""A run's identity from content: the output settings, the config hash (the prediction cache key) and
the idempotency key that makes a re-delivered trigger find its run instead of making a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from posteval.hashing import sha256_json
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import DatasetSpec, LoadedSuite, Suite
from posteval.pipeline.code import sampling_settings
from posteval.pipeline.datasets import DatasetRef
from posteval.runners import dtype_name, tokenization_policy
from posteval.runners.chat import prompting
from posteval.settings import get_settings


def output_settings(suite: Suite, spec: DatasetSpec, checkpoint: CheckpointInfo) -> dict[str, object]:
    """Everything that decides a dataset's model outputs besides checkpoint and data (never the batch size).

    The one source of a run's output identity: it feeds the config hash (the prediction cache key and the
    run's idempotency key), is stored on the run, and two runs are compared only when it is equal for every
    dataset they share. A setting added here takes part in all three.
    """
    app = get_settings()
    # The key decides which row an example key names; the prompt templates every kind's model input.
    settings: dict[str, object] = {
        "runner": checkpoint.runner,
        "kind": spec.kind,
        "key": spec.key,
        "prompt": spec.prompt,
    }
    if checkpoint.runner == "hf":
        settings["dtype"] = dtype_name(app.device, app.dtype)
        settings["max_length"] = app.max_length
    # The resolved tokenization policy decides what the model conditions on (for a served model it
    # holds bos_text): a changed policy is a new config, never a silent cache hit.
    settings["tokenization"] = tokenization_policy(checkpoint, suite.bos)
    # The chat template's hash, system message and few-shot draw (absent for plain prompts, so runs
    # stored before chat templates keep their config hash).
    prompts = prompting(suite, spec).describe()
    if prompts is not None:
        settings["prompting"] = prompts
    if spec.kind == "perplexity":
        settings |= {"text": spec.text, "stride": spec.stride}
    elif spec.kind == "code":
        settings |= {
            "max_new_tokens": suite.generation.max_new_tokens,
            "stop": suite.generation.stop,
            "program": spec.program,
            **sampling_settings(spec),
        }
    elif spec.scoring == "loglikelihood":
        settings |= {"prompt": spec.prompt, "labels": spec.labels, "delimiter": spec.target_delimiter}
    else:
        settings |= {
            "prompt": spec.prompt,
            "max_new_tokens": suite.generation.max_new_tokens,
            "stop": suite.generation.stop,
        }
    return settings


def config_hash(suite: Suite, spec: DatasetSpec, checkpoint: CheckpointInfo) -> str:
    """The hash of :func:`output_settings`: which stored outputs belong to this dataset and checkpoint."""
    return sha256_json(output_settings(suite, spec, checkpoint))


def run_settings(checkpoint: CheckpointInfo, suite: Suite, datasets: Sequence[DatasetRef]) -> dict[str, Any]:
    """What a run's numbers depend on besides checkpoint and data, as stored on the run.

    Per dataset: its output settings and their hash, and what turns outputs into scores (reference field,
    label set). For the run: the seed and bootstrap size of its statistics (a change is noted when runs
    are compared, never a reason to refuse). Gates, tolerances, batch size and paths are not here.
    """
    per_dataset: dict[str, Any] = {}
    for ref in datasets:
        spec = ref.spec
        settings = output_settings(suite, spec, checkpoint)
        per_dataset[spec.name] = {
            "output": settings,
            "config_hash": sha256_json(settings),
            "scoring": {"reference": spec.reference, "labels": spec.labels}
            | ({"tests": spec.tests, "sandbox": spec.sandbox.model_dump()} if spec.kind == "code" else {}),
        }
    return {
        "datasets": per_dataset,
        "statistics": {"seed": suite.seed, "bootstrap_resamples": suite.bootstrap_resamples},
    }


def idempotency_key(checkpoint: CheckpointInfo, suite: LoadedSuite, datasets: Sequence[DatasetRef]) -> str:
    """Content identity of a run: the same checkpoint, suite, data and output settings (dtype, context
    cap...) always map to the same run, and a change of any of them makes a new one."""
    fingerprints = sorted(d.fingerprint for d in datasets)
    configs = sorted(config_hash(suite.suite, d.spec, checkpoint) for d in datasets)
    return sha256_json(
        [checkpoint.fingerprint, checkpoint.model_name, suite.fingerprint, fingerprints, configs]
    )
