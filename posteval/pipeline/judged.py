"""LLM judging of one dataset's stored answers: pointwise against the rubric and pairwise against the
base model's answers, which come from the output cache (generated once for all the base's fine-tunes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.db.judgments import DatabaseAnswerCache
from posteval.db.retry import retry_transient
from posteval.errors import RunnerError
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.data import LoadedDataset
from posteval.inputs.suite import Suite
from posteval.judges.backends import Judge, make_judge
from posteval.judges.engine import Item, judge_pairwise, judge_pointwise
from posteval.judges.spec import JudgeSpec
from posteval.pipeline.datasets import DatasetRef
from posteval.pipeline.identity import config_hash


@lru_cache(maxsize=4)
def _judge(spec_json: str) -> Judge:
    """One judge per spec per process (a local judge's model loads once for every dataset)."""
    return make_judge(JudgeSpec.model_validate_json(spec_json))


def paired(dataset: DatasetRef) -> bool:
    """Whether the dataset's judge compares answers with the base model's (which must then be generated)."""
    judge = dataset.spec.judge
    return judge is not None and judge.pairwise is not None


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


def judge_dataset(
    suite: Suite,
    dataset: DatasetRef,
    loaded: LoadedDataset,
    answers: Sequence[str],
    *,
    base: CheckpointInfo | None,
    database_url: str | None,
) -> Mapping[str, Sequence[Mapping[str, Any]]] | None:
    """The judge's verdicts on ``answers`` (None without a judge): ``pointwise`` with a rubric, ``pairwise``
    when there is a base model's answer to compare with. Cached answers are read, never asked again."""
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
    if spec.pairwise is not None and base is not None:
        others = compared_answers(base, suite, dataset, loaded.keys, database_url)
        paired = [Item(i.key, i.prompt, i.answer, other=o) for i, o in zip(items, others, strict=True)]
        verdicts["pairwise"] = judge_pairwise(judge, spec.pairwise, paired, cache)
    return verdicts
