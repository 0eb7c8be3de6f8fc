"""What a judge is asked and how its answers are read: pointwise rubric prompts answered with JSON
(a score and a rationale per criterion, validated against a schema) and pairwise prompts (A, B or tie).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from posteval.judges.spec import Pairwise, Rubric

Messages = list[dict[str, str]]
PAIR_VERDICTS = ("A", "B", "tie")

SYSTEM = "You are a strict, impartial evaluator of answers written by AI assistants."


def pointwise_schema(rubric: Rubric) -> dict[str, Any]:
    """The JSON schema of a pointwise answer: per criterion, a score on the scale and a rationale."""
    entry = {
        "type": "object",
        "properties": {"score": {"enum": list(rubric.scale)}, "rationale": {"type": "string"}},
        "required": ["score", "rationale"],
    }
    return {
        "type": "object",
        "properties": {criterion: entry for criterion in rubric.criteria},
        "required": list(rubric.criteria),
    }


PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"winner": {"enum": list(PAIR_VERDICTS)}, "rationale": {"type": "string"}},
    "required": ["winner", "rationale"],
}


def _reference(reference: str | None) -> str:
    return f"\n\n[Reference answer]\n{reference}" if reference is not None else ""


def pointwise_messages(rubric: Rubric, prompt: str, answer: str, reference: str | None) -> Messages:
    """The free-form pointwise request: the rubric, the prompt, the answer, and the JSON to answer with."""
    scale = ", ".join(str(point) for point in rubric.scale)
    shape = {c: {"score": rubric.scale[-1], "rationale": "..."} for c in rubric.criteria}
    user = (
        f"{rubric.instructions}\n\nScore the answer on each criterion ({', '.join(rubric.criteria)}) with "
        f"one of {scale} (higher is better).\n\n[Prompt]\n{prompt}{_reference(reference)}\n\n"
        f"[Answer]\n{answer}\n\nAnswer only with JSON shaped like {json.dumps(shape)}."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def criterion_messages(
    rubric: Rubric, criterion: str, prompt: str, answer: str, reference: str | None
) -> Messages:
    """The likelihood judge's request for one criterion: its verdict is one scale point."""
    scale = ", ".join(str(point) for point in rubric.scale)
    user = (
        f"{rubric.instructions}\n\nCriterion: {criterion}. Score the answer with one of {scale} "
        f"(higher is better).\n\n[Prompt]\n{prompt}{_reference(reference)}\n\n[Answer]\n{answer}\n\n"
        "Reply with the score only."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def pairwise_messages(
    pairwise: Pairwise, prompt: str, first: str, second: str, *, free_form: bool
) -> Messages:
    """The pairwise request: answer A is ``first``, answer B ``second``."""
    how = (
        'Answer only with JSON shaped like {"winner": "A" | "B" | "tie", "rationale": "..."}.'
        if free_form
        else "Reply with A, B or tie only."
    )
    answers = f"[Answer A]\n{first}\n\n[Answer B]\n{second}"
    user = f"{pairwise.instructions}\n\n[Prompt]\n{prompt}\n\n{answers}\n\n{how}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def repair_messages(messages: Messages, raw: str, problem: str) -> Messages:
    """The one repair request: the conversation, the malformed answer, and what was wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": raw},
        {
            "role": "user",
            "content": f"That answer is not valid: {problem}. Answer again, with the JSON only.",
        },
    ]


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_answer(raw: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON object in ``raw`` (a ```json fence allowed), validated; ValueError saying what is wrong."""
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise ValueError(f"at {where}: {exc.message}") from None
    return dict(value)
