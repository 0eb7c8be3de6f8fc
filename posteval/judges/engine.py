"""Judging a dataset: every request answered once (a cache keyed by the judge and its settings, the rubric
hash, the prompt and the answers judged), at most ``concurrency`` requests in flight per judge, one repair
request for a malformed free-form answer, and what still does not parse kept as unparsed with its raw text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from posteval.hashing import sha256_json
from posteval.judges.backends import Judge, Messages
from posteval.judges.prompts import (
    PAIR_VERDICTS,
    PAIRWISE_SCHEMA,
    criterion_messages,
    pairwise_messages,
    parse_answer,
    pointwise_messages,
    pointwise_schema,
    repair_messages,
)
from posteval.judges.spec import Pairwise, Rubric


class AnswerCache(Protocol):
    """Where judge answers are kept between runs (the pipeline's is the database)."""

    def get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored answers among ``keys``."""
        ...

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        """Store one answer."""
        ...


@dataclass(frozen=True)
class Item:
    """One example to judge: its key, the prompt, the evaluated answer, a reference and the other answer."""

    key: str
    prompt: str
    answer: str
    reference: str | None = None
    other: str | None = None  # the base model's (or the named run's) answer, for pairwise judging


def _free_form(judge: Judge, messages: Messages, schema: dict[str, Any]) -> dict[str, Any]:
    """Ask; on a malformed answer ask once more with the problem named; unparsed keeps every raw text."""
    raw = judge.ask(messages)
    try:
        return {"raw": raw, "parsed": parse_answer(raw, schema), "error": None}
    except ValueError as first:
        retry = judge.ask(repair_messages(messages, raw, str(first)))
        try:
            return {"raw": retry, "parsed": parse_answer(retry, schema), "error": None, "repaired_from": raw}
        except ValueError as second:
            return {
                "raw": f"{raw}\n\n[repair request answered]\n{retry}",
                "parsed": None,
                "error": str(second),
            }


def _ranked(judge: Judge, messages: Messages, verdicts: list[str]) -> tuple[str, dict[str, float]]:
    logprobs = judge.rank(messages, verdicts)
    scored = dict(zip(verdicts, logprobs, strict=True))
    return max(verdicts, key=lambda v: scored[v]), scored


def _pointwise_answer(judge: Judge, rubric: Rubric, item: Item) -> dict[str, Any]:
    if judge.free_form:
        messages = pointwise_messages(rubric, item.prompt, item.answer, item.reference)
        return _free_form(judge, messages, pointwise_schema(rubric))
    parsed, logprobs = {}, {}
    for criterion in rubric.criteria:
        messages = criterion_messages(rubric, criterion, item.prompt, item.answer, item.reference)
        best, scored = _ranked(judge, messages, [str(point) for point in rubric.scale])
        parsed[criterion] = {"score": int(best), "rationale": f"likeliest verdict {best}"}
        logprobs[criterion] = scored
    return {"raw": json.dumps({"verdict_logprobs": logprobs}), "parsed": parsed, "error": None}


def _pairwise_answer(
    judge: Judge, pairwise: Pairwise, prompt: str, first: str, second: str
) -> dict[str, Any]:
    messages = pairwise_messages(pairwise, prompt, first, second, free_form=judge.free_form)
    if judge.free_form:
        return _free_form(judge, messages, PAIRWISE_SCHEMA)
    best, scored = _ranked(judge, messages, list(PAIR_VERDICTS))
    parsed = {"winner": best, "rationale": f"likeliest verdict {best}"}
    return {"raw": json.dumps({"verdict_logprobs": scored}), "parsed": parsed, "error": None}


def _answers(
    judge: Judge, cache: AnswerCache, requests: dict[str, Callable[[], dict[str, Any]]], digest: str
) -> dict[str, dict[str, Any]]:
    """Each request's answer by cache key: stored ones read back, the rest asked, ``concurrency`` at once."""
    found = cache.get(list(requests))
    todo = [key for key in requests if key not in found]
    if todo:
        with ThreadPoolExecutor(max_workers=judge.concurrency) as pool:
            futures = {pool.submit(requests[key]): key for key in todo}
            for future in as_completed(futures):
                answer = {"judge": judge.identity, "rubric_hash": digest, **future.result()}
                cache.put(futures[future], answer)
                found[futures[future]] = answer
    return found


def _key(judge: Judge, rubric_hash: str, kind: str, *parts: str | None) -> str:
    return sha256_json([judge.identity, rubric_hash, kind, *parts])


def judge_pointwise(
    judge: Judge, rubric: Rubric, items: Sequence[Item], cache: AnswerCache
) -> list[dict[str, Any]]:
    """One record per item: per-criterion scores and rationales (None when unparsed) with provenance."""
    digest = rubric.digest()
    keys = [_key(judge, digest, "pointwise", i.prompt, i.answer, i.reference) for i in items]
    requests: dict[str, Callable[[], dict[str, Any]]] = {
        k: partial(_pointwise_answer, judge, rubric, i) for k, i in zip(keys, items, strict=True)
    }
    answers = _answers(judge, cache, requests, digest)
    records = []
    for key, item in zip(keys, items, strict=True):
        answer = answers[key]
        parsed = answer["parsed"]
        records.append(
            {
                "key": item.key,
                "judge": answer["judge"],
                "rubric_hash": digest,
                "raw": answer["raw"],
                "error": answer["error"],
                "scores": None if parsed is None else {c: float(parsed[c]["score"]) for c in rubric.criteria},
                "rationales": None
                if parsed is None
                else {c: parsed[c]["rationale"] for c in rubric.criteria},
            }
        )
    return records


# What each order's verdict means for the evaluated answer: A first (evaluated first), then swapped.
_FIRST = {"A": "win", "B": "loss", "tie": "tie"}
_SWAPPED = {"A": "loss", "B": "win", "tie": "tie"}


def judge_pairwise(
    judge: Judge, pairwise: Pairwise, items: Sequence[Item], cache: AnswerCache, against: str = "base"
) -> list[dict[str, Any]]:
    """One record per item, judged in both orders: win, tie or loss of the evaluated answer (orders that
    disagree are a tie, marked ``inconsistent``), None when either order's answer did not parse.
    ``against`` (``base`` or the full id of the run whose answers are compared with) is part of each
    request's cache key and of each record's provenance."""
    digest = pairwise.digest()
    requests: dict[str, Callable[[], dict[str, Any]]] = {}
    pairs = []
    for item in items:
        if item.other is None:
            raise ValueError(f"example {item.key!r} has no answer to compare with")
        first = _key(judge, digest, "pairwise", against, item.prompt, item.answer, item.other)
        swapped = _key(judge, digest, "pairwise", against, item.prompt, item.other, item.answer)
        requests[first] = partial(_pairwise_answer, judge, pairwise, item.prompt, item.answer, item.other)
        requests[swapped] = partial(_pairwise_answer, judge, pairwise, item.prompt, item.other, item.answer)
        pairs.append((first, swapped))
    answers = _answers(judge, cache, requests, digest)
    records = []
    for item, (first, swapped) in zip(items, pairs, strict=True):
        a, b = answers[first], answers[swapped]
        outcome, inconsistent = None, None
        if a["parsed"] is not None and b["parsed"] is not None:
            one, two = _FIRST[a["parsed"]["winner"]], _SWAPPED[b["parsed"]["winner"]]
            inconsistent = one != two
            outcome = "tie" if inconsistent else one
        records.append(
            {
                "key": item.key,
                "judge": a["judge"],
                "rubric_hash": digest,
                "against": against,
                "raw": [a["raw"], b["raw"]],
                "error": a["error"] or b["error"],
                "outcome": outcome,
                "inconsistent": inconsistent,
                "rationales": [
                    None if answer["parsed"] is None else answer["parsed"]["rationale"] for answer in (a, b)
                ],
            }
        )
    return records
