"""Per-mode output production: generation, multiple-choice loglikelihoods and perplexity windows, stored
batch by batch so what is already in the database is never computed again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

from posteval import progress, timing
from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.db.retry import retry_transient
from posteval.errors import InputError
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.data import LoadedDataset
from posteval.inputs.suite import Suite
from posteval.pipeline.code import generation_options, sample_keys
from posteval.pipeline.datasets import DatasetRef, load
from posteval.pipeline.identity import config_hash
from posteval.pipeline.shards import shard_range
from posteval.runners import check_dtype, get_runner
from posteval.runners.base import GenerationOptions, Loglikelihood, Runner, templated_prompts
from posteval.runners.chat import Prompting, model_inputs, served_messages
from posteval.runners.openai import OpenAIRunner
from posteval.settings import get_settings

log = logging.getLogger(__name__)


Row = tuple[str, str | None, dict[str, Any]]  # example key, output text, extra values


def _shown(prompt: str, how: Prompting) -> dict[str, Any]:
    """The rendered prompt, stored with a templated or few-shot output (the report shows it)."""
    return {"prompt": prompt} if how.describe() is not None else {}


def _generated_rows(
    runner: Runner, suite: Suite, loaded: LoadedDataset, todo: list[int]
) -> Iterator[list[Row]]:
    prompts, how = model_inputs(suite, loaded)
    options = GenerationOptions(suite.generation.max_new_tokens, tuple(suite.generation.stop))
    size = suite.generation.batch_size
    if how.server_side:  # the served model renders its own template: messages to /v1/chat/completions
        if not isinstance(runner, OpenAIRunner):
            raise InputError(
                f"dataset {loaded.spec.name!r}: a server-side chat template needs a served model"
            )
        batches = runner.chat_generate(
            served_messages([prompts[i] for i in todo], how), options, batch_size=size
        )
    else:
        batches = runner.generate([prompts[i] for i in todo], options, batch_size=size)
    for indices, outputs in batches:
        yield [
            (loaded.keys[todo[i]], out, _shown(prompts[todo[i]], how))
            for i, out in zip(indices, outputs, strict=True)
        ]


def _choice_rows(runner: Runner, suite: Suite, loaded: LoadedDataset, todo: list[int]) -> Iterator[list[Row]]:
    """Multiple choice: every choice scored as a continuation; the likeliest (by summed log-prob) is the
    output. Each choice's log-prob, token count and byte count are stored, so accuracy_norm needs no rerun.

    A choice scored over zero tokens would get log-prob 0 and always win: it is an error naming the example.
    """
    spec = loaded.spec
    (prompts, how), choice_lists = model_inputs(suite, loaded), loaded.choice_lists()
    delimiter = "" if how.chat else spec.target_delimiter  # under a template the answer opens the turn
    requests: list[tuple[str, str]] = []
    owner: list[tuple[int, int]] = []  # (position in todo, choice index) of every request
    for position, i in enumerate(todo):
        for j, choice in enumerate(choice_lists[i]):
            requests.append((prompts[i], delimiter + choice))
            owner.append((position, j))
    pending: dict[int, dict[int, Loglikelihood]] = {}
    for indices, results in runner.loglikelihood(requests, batch_size=suite.generation.batch_size):
        rows: list[Row] = []
        for request, result in zip(indices, results, strict=True):
            position, j = owner[request]
            example = todo[position]
            choices = choice_lists[example]
            if result.n_tokens == 0:
                raise InputError(
                    f"dataset {spec.name!r}, example {loaded.keys[example]!r}: choice {choices[j]!r} was "
                    f"scored over zero tokens (an empty choice, or a context ending where the choice's "
                    f"first token begins: end the prompt before target_delimiter {spec.target_delimiter!r})"
                )
            scores = pending.setdefault(position, {})
            scores[j] = result
            if len(scores) == len(choices):
                del pending[position]
                best = max(range(len(choices)), key=lambda k: scores[k].logprob)
                extra = {
                    "logprobs": {choices[k]: scores[k].logprob for k in range(len(choices))},
                    "n_tokens": {choices[k]: scores[k].n_tokens for k in range(len(choices))},
                    "n_bytes": {choices[k]: len(choices[k].encode("utf-8")) for k in range(len(choices))},
                    **_shown(prompts[example], how),
                }
                rows.append((loaded.keys[example], choices[best], extra))
        if rows:
            yield rows


def _sampled_rows(
    runner: Runner, suite: Suite, loaded: LoadedDataset, todo: list[int]
) -> Iterator[list[Row]]:
    """kind: code: each sample index in turn over the examples still missing it, stored as ``key#s``."""
    prompts = loaded.prompts()
    wanted = sample_keys(loaded.keys, loaded.spec.samples())
    by_sample: dict[int, list[int]] = {}
    for position in todo:  # positions in ``wanted``: example position * n + sample index
        example, sample = divmod(position, loaded.spec.samples())
        by_sample.setdefault(sample, []).append(example)
    for sample, examples in sorted(by_sample.items()):
        options = generation_options(suite, loaded.spec, sample)
        batches = runner.generate(
            [prompts[i] for i in examples], options, batch_size=suite.generation.batch_size
        )
        for indices, outputs in batches:
            yield [
                (wanted[examples[i] * loaded.spec.samples() + sample], out, {"sample": sample})
                for i, out in zip(indices, outputs, strict=True)
            ]


def _perplexity_rows(
    runner: Runner, suite: Suite, loaded: LoadedDataset, todo: list[int]
) -> Iterator[list[Row]]:
    texts = loaded.texts()
    batches = runner.rolling_loglikelihood(
        [texts[i] for i in todo], batch_size=suite.generation.batch_size, stride=loaded.spec.stride
    )
    for indices, results in batches:
        yield [
            (loaded.keys[todo[i]], None, {"logprob": r.logprob, "n_tokens": r.n_tokens, "n_bytes": r.n_bytes})
            for i, r in zip(indices, results, strict=True)
        ]


def run_model(
    checkpoint: CheckpointInfo,
    suite: Suite,
    dataset: DatasetRef,
    *,
    database_url: str | None = None,
    shard: tuple[int, int] | None = None,
) -> list[str]:
    """Model outputs for every example not yet stored, written batch by batch; returns run warnings.

    Whatever is stored already is not computed again: a second run costs no model call, and a run
    killed mid-dataset resumes after the last stored batch. ``shard`` (index, count) limits the work to
    one block of the examples, so shards can run on several workers; outputs are stored by example key,
    so scoring reads them back in example order however they were computed.
    """
    settings = get_settings()
    spec = dataset.spec
    loaded = load(spec)
    chash = config_hash(suite, spec, checkpoint)

    def stored_keys() -> set[str]:
        with session_scope(database_url) as session:
            return repo.cached_keys(session, checkpoint.fingerprint, dataset.fingerprint, chash)

    with timing.phase("database reads"):
        done = retry_transient(stored_keys, f"reading stored outputs of {spec.name}")
    # A code dataset stores n outputs per example (key#0 .. key#n-1); shards split the examples.
    wanted = sample_keys(loaded.keys, spec.samples()) if spec.kind == "code" else loaded.keys
    per = len(wanted) // len(loaded.keys)
    examples = range(len(loaded.keys)) if shard is None else shard_range(len(loaded.keys), *shard)
    positions = [i * per + s for i in examples for s in range(per)]
    todo = [i for i in positions if wanted[i] not in done]
    if not todo:
        log.info("dataset %s: all %d outputs cached", spec.name, len(positions))
        return []
    with timing.phase("model load"):  # once per checkpoint and process (get_runner keeps it)
        runner = get_runner(checkpoint, settings.device, settings.dtype, suite.bos)
    check_dtype(runner, settings.device, settings.dtype)
    warnings_before = len(runner.warnings)
    if spec.kind == "code":
        produce, verb = _sampled_rows, "generating programs"
    elif spec.kind == "perplexity":
        produce, verb = _perplexity_rows, "scoring text"
    elif spec.scoring == "loglikelihood":
        produce, verb = _choice_rows, "scoring choices"
    else:
        produce, verb = _generated_rows, "generating"
    templated = templated_prompts() if spec.chat is True else nullcontext()
    batches = produce(runner, suite, loaded, todo)
    with progress.job(f"{spec.name}: {verb}", len(todo)) as bar, templated:
        while True:
            with timing.phase(f"compute: {spec.name}"):
                rows = next(batches, None)
            if rows is None:
                break
            with timing.phase("database writes"):
                _store_batch(checkpoint.fingerprint, dataset.fingerprint, chash, rows, database_url)
            progress.advance(bar, len(rows))
    return [f"{spec.name}: {w}" for w in runner.warnings[warnings_before:]]


def _store_batch(
    checkpoint_fp: str, dataset_fp: str, chash: str, rows: list[Row], database_url: str | None
) -> None:
    """One batch of outputs, in one transaction; retried over a database blip (stored rows are skipped)."""

    def write() -> None:
        with session_scope(database_url) as session:
            repo.add_predictions(session, checkpoint_fp, dataset_fp, chash, rows)

    retry_transient(write, "storing a batch of model outputs")
