"""LLM judging of one dataset's stored answers: pointwise against the rubric and pairwise against the
base model's answers, which come from the output cache (generated once for all the base's fine-tunes), or
against a named run's stored answers to the same dataset (the outputs that run scored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from posteval.db import queries, reads, repo
from posteval.db.engine import session_scope
from posteval.db.judgments import DatabaseAnswerCache
from posteval.db.retry import retry_transient
from posteval.errors import InputError, RunnerError
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.data import LoadedDataset
from posteval.inputs.suite import Suite
from posteval.judges.backends import Judge, make_judge
from posteval.judges.engine import Item, judge_pairwise, judge_pointwise
from posteval.judges.spec import JudgeSpec
from posteval.pipeline.datasets import DatasetRef, load
from posteval.pipeline.identity import config_hash


@lru_cache(maxsize=4)
def _judge(spec_json: str) -> Judge:
    """One judge per spec per process (a local judge's model loads once for every dataset)."""
    return make_judge(JudgeSpec.model_validate_json(spec_json))


def paired(dataset: DatasetRef) -> bool:
    """Whether the dataset's judge compares answers with the base model's (which must then be generated)."""
    judge = dataset.spec.judge
    return judge is not None and judge.pairwise is not None and judge.pairwise.named_run is None


def run_answers(
    prefix: str, dataset: DatasetRef, keys: Sequence[str], database_url: str | None
) -> tuple[str, list[str]]:
    """The named run's full id and its stored answers to the dataset in ``keys`` order:
    the outputs it scored (its checkpoint, the same dataset content, its stored config hash). A run that is
    unknown, has no outputs for the dataset or does not cover every example is refused (InputError)."""
    name = dataset.spec.name
    try:
        run_id = queries.resolve_run_id(prefix, database_url=database_url)
    except InputError as exc:
        raise InputError(f"dataset {name!r}: pairwise judging against run {prefix!r}: {exc}") from None

    def read() -> tuple[tuple[str, dict[str, object] | None] | None, list[tuple[str, str | None, str]]]:
        with session_scope(database_url) as session:
            found = reads.run_outputs_key(session, run_id)
            rows = [] if found is None else reads.predictions(session, found[0], dataset.fingerprint)
            return found, rows

    found, rows = retry_transient(read, f"reading run {run_id[:12]}'s outputs of {name}")
    chash = reads.stored_config_hash(found[1], name) if found is not None else None
    stored = {key: output for key, output, h in rows if h == chash}
    if found is None or chash is None or not stored:
        raise InputError(
            f"dataset {name!r}: run {run_id[:12]} (pairwise 'against') has no outputs for this dataset "
            "as it is now (not in that run, or its file changed since)"
        )
    missing = [key for key in keys if key not in stored]
    if missing:
        raise InputError(
            f"dataset {name!r}: run {run_id[:12]} (pairwise 'against') has outputs for "
            f"{len(keys) - len(missing)} of its {len(keys)} examples (missing e.g. {missing[:3]})"
        )
    return run_id, [stored[key] or "" for key in keys]


def compared_answers(
    base: CheckpointInfo, suite: Suite, dataset: DatasetRef, keys: Sequence[str], database_url: str | None
) -> list[str]:
    """The base model's stored answers to the dataset, in ``keys`` order (RunnerError if any is missing)."""
    chash = config_hash(suite, dataset.spec, base)

    def read() -> dict[str, repo.StoredOutput]:
        with session_scope(database_url) as session:
            return repo.cached_outputs(session, base.fingerprint, dataset.fingerprint, chash)

    stored = retry_transient(read, f"reading the base model's outputs of {dataset.spec.name}")
    missing = [key for key in keys if key not in stored]
    if missing:
        raise RunnerError(
            f"dataset {dataset.spec.name!r}: {len(missing)} base-model outputs missing (e.g. {missing[:3]})"
        )
    return [stored[key].output or "" for key in keys]


def check_named_runs(datasets: Sequence[DatasetRef], database_url: str | None) -> None:
    """Refuse, before a run is registered, a pairwise ``against: RUN_ID`` whose run cannot answer (see
    :func:`run_answers`)."""
    for dataset in datasets:
        judge = dataset.spec.judge
        named = judge.pairwise.named_run if judge is not None and judge.pairwise is not None else None
        if named is not None:
            run_answers(named, dataset, load(dataset.spec).keys, database_url)


def judge_dataset(
    suite: Suite,
    dataset: DatasetRef,
    loaded: LoadedDataset,
    answers: Sequence[str],
    *,
    checkpoint: CheckpointInfo,
    base: CheckpointInfo | None,
    database_url: str | None,
) -> Mapping[str, Sequence[Mapping[str, Any]]] | None:
    """The judge's verdicts on ``checkpoint``'s ``answers`` (None without a judge): ``pointwise`` with a
    rubric, ``pairwise`` when there are other answers to compare with (none when the checkpoint is the base
    scoring itself, for forgetting). Cached answers are read, never asked again."""
    spec = dataset.spec.judge
    if spec is None:
        return None
    judge = _judge(spec.model_dump_json())
    cache = DatabaseAnswerCache(database_url)
    field = spec.rubric.reference if spec.rubric is not None else None
    prompts = loaded.prompts()
    items = [
        Item(key, prompt, answer, None if field is None else str(row[field]))
        for key, prompt, answer, row in zip(loaded.keys, prompts, answers, loaded.rows, strict=True)
    ]
    verdicts: dict[str, Sequence[Mapping[str, Any]]] = {}
    if spec.rubric is not None:
        verdicts["pointwise"] = judge_pointwise(judge, spec.rubric, items, cache)
    if spec.pairwise is None:
        return verdicts
    if base is not None and checkpoint.fingerprint == base.fingerprint:
        return verdicts  # the base scoring itself (forgetting): nothing to compare with
    named = spec.pairwise.named_run
    if named is not None:
        against, others = run_answers(named, dataset, loaded.keys, database_url)
    elif base is None:
        raise InputError(
            f"dataset {dataset.spec.name!r}: pairwise judging against the base model needs one (the suite's "
            "base_model, or an adapter's base)"
        )
    else:
        against, others = "base", compared_answers(base, suite, dataset, loaded.keys, database_url)
    paired = [Item(i.key, i.prompt, i.answer, other=o) for i, o in zip(items, others, strict=True)]
    verdicts["pairwise"] = judge_pairwise(judge, spec.pairwise, paired, cache, against)
    return verdicts
