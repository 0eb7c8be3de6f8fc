"""kind: code datasets: sample keys and decoding options for n samples per problem, the programs the
model's completions make, and running them all in the sandbox.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from posteval import progress
from posteval.hashing import sha256_json
from posteval.inputs.data import LoadedDataset
from posteval.inputs.suite import DatasetSpec, Suite
from posteval.runners.base import GenerationOptions
from posteval.sandbox import Limits, Program, get_backend, run_all

log = logging.getLogger(__name__)


def sample_keys(keys: Sequence[str], n: int) -> list[str]:
    """The stored key of each example's each sample, example-major: ``key#0`` .. ``key#n-1``."""
    return [f"{key}#{sample}" for key in keys for sample in range(n)]


def generation_options(suite: Suite, spec: DatasetSpec, sample: int) -> GenerationOptions:
    """Greedy decoding, or the dataset's sampling with a seed of its own for each sample index."""
    base = GenerationOptions(suite.generation.max_new_tokens, tuple(suite.generation.stop))
    sampling = spec.sampling
    if sampling is None:
        return base
    seed = int(sha256_json([sampling.seed, sample])[:8], 16)
    return GenerationOptions(
        base.max_new_tokens, base.stop, temperature=sampling.temperature, top_p=sampling.top_p, seed=seed
    )


def sampling_settings(spec: DatasetSpec) -> dict[str, object]:
    """The sampling part of a code dataset's output settings (what decides its outputs)."""
    sampling = spec.sampling
    if sampling is None:
        return {"decoding": "greedy", "n": 1}
    return {"decoding": "sampled", **sampling.model_dump(mode="json")}


def limits(spec: DatasetSpec) -> Limits:
    """The dataset's sandbox limits."""
    options = spec.sandbox.model_dump()
    return Limits(**{key: options[key] for key in Limits.__dataclass_fields__})


def test_code(row: Mapping[str, Any], spec: DatasetSpec) -> str:
    """The row's tests: HumanEval's test code as is, or MBPP's assert lines one per line."""
    tests = row[spec.tests]
    return tests if isinstance(tests, str) else "\n".join(str(line) for line in tests)


def program(row: Mapping[str, Any], spec: DatasetSpec, prompt: str, completion: str) -> Program:
    """The program a completion makes: after its prompt (HumanEval) or alone (MBPP), with the row's tests."""
    code = prompt + completion if spec.program == "prompt+completion" else completion
    entry = row.get(spec.entry_point)
    return Program(
        code=code, test=test_code(row, spec), entry_point=entry if isinstance(entry, str) else None
    )


def execute(
    loaded: LoadedDataset, completions: Mapping[str, str]
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """Every sample of every example run in the dataset's sandbox; each example's executions in sample
    order, and the run's warnings (protections the backend lacks here)."""
    spec = loaded.spec
    n = spec.samples()
    prompts = loaded.prompts()
    programs = [
        program(row, spec, prompt, completions[f"{key}#{sample}"])
        for key, row, prompt in zip(loaded.keys, loaded.rows, prompts, strict=True)
        for sample in range(n)
    ]
    sandbox = get_backend(spec.sandbox.backend)
    notes = sandbox.notes()
    for note in notes:
        log.warning("dataset %s: sandbox %s: %s", spec.name, sandbox.name, note)
    with progress.job(f"{spec.name}: running programs", len(programs)) as bar:
        executions = run_all(
            sandbox,
            programs,
            limits(spec),
            workers=spec.sandbox.workers,
            on_done=lambda _: progress.advance(bar, 1),
        )
    flat = [execution.as_dict() for execution in executions]
    per_example = [flat[i * n : (i + 1) * n] for i in range(len(loaded.keys))]
    warnings = [f"{spec.name}: sandbox {sandbox.name}: {note}" for note in notes]
    return per_example, warnings
