"""Reading a filled-in export (CSV or JSONL) against its key: every label checked, then un-blinded.

Refused, naming the file and line: an item the key does not have, an item labelled twice, a score that
is not one of the rubric's points, a preference other than ``A``, ``B`` or ``tie``, a row labelled on some
criteria but not all. A row left wholly blank is an item the rater skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posteval.errors import InputError
from posteval.human.blind import PREFERENCES

OUTCOME = {"run": {"A": 1.0, "B": 0.0, "tie": 0.5}, "base": {"A": 0.0, "B": 1.0, "tie": 0.5}}


@dataclass(frozen=True)
class Key:
    """An export's key file: which run (and base) it shows, its rubric and every item's identity."""

    path: Path
    export: str
    run: str
    base_run: str | None
    kind: str  # "score" or "pair"
    criteria: list[str]
    scale: list[int]
    items: dict[str, dict[str, str]]


@dataclass(frozen=True)
class Label:
    """One un-blinded label: a criterion's score, or the run's outcome against the base (criterion "")."""

    line: int
    dataset: str
    example: str
    criterion: str
    value: float


def read_key(path: Path) -> Key:
    """The key file at ``path``; a missing or malformed one is refused."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rubric = data["rubric"] or {"criteria": [], "scale": []}
        return Key(
            path,
            str(data["export"]),
            str(data["run"]),
            data["base_run"],
            str(data["kind"]),
            [str(c) for c in rubric["criteria"]],
            [int(p) for p in rubric["scale"]],
            dict(data["items"]),
        )
    except FileNotFoundError:
        raise InputError(
            f"{path}: no such key file (the key.json written by 'posteval human export')"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not an export key file ({type(exc).__name__}: {exc})") from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV (a quoted field may span lines: its first line) or JSONL file."""
    if path.suffix.lower() == ".jsonl":
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
        return
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: expected a .csv or .jsonl file of labels")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        start = 2
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _score(path: Path, line: int, field: str, value: Any, scale: list[int]) -> float:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if number not in scale:
        points = ", ".join(str(p) for p in scale)
        raise InputError(
            f"{path} line {line}: field {field!r}: {text!r} is not on the rubric's scale ({points})"
        )
    return number


def _preference(path: Path, line: int, value: Any) -> str:
    text = str(value).strip()
    for choice in PREFERENCES:
        if text.lower() == choice.lower():
            return choice
    raise InputError(
        f"{path} line {line}: field 'preference': {text!r} is not one of {', '.join(PREFERENCES)}"
    )


def read_labels(path: Path, key: Key) -> list[Label]:
    """Every label in the filled-in file ``path``, checked against ``key`` and un-blinded."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    fields = key.criteria if key.kind == "score" else ["preference"]
    labels: list[Label] = []
    seen: dict[str, int] = {}
    for line, row in _rows(path):
        missing = [f for f in ("item", *fields) if f not in row]
        if missing:
            raise InputError(
                f"{path} line {line}: no field {missing[0]!r} (expected {', '.join(['item', *fields])})"
            )
        item = str(row["item"]).strip()
        if item not in key.items:
            raise InputError(f"{path} line {line}: unknown item {item!r}: not in the export's key {key.path}")
        if item in seen:
            raise InputError(f"{path} line {line}: item {item!r} labelled twice (first on line {seen[item]})")
        seen[item] = line
        blank = [f for f in fields if _blank(row[f])]
        if len(blank) == len(fields):
            continue  # the rater skipped this item
        if blank:
            raise InputError(
                f"{path} line {line}: item {item!r} has no score for {blank[0]!r}; score every "
                "criterion or leave the row blank"
            )
        entry = key.items[item]
        if key.kind == "score":
            labels.extend(
                Label(line, entry["dataset"], entry["example"], f, _score(path, line, f, row[f], key.scale))
                for f in fields
            )
        else:
            preference = _preference(path, line, row["preference"])
            labels.append(
                Label(line, entry["dataset"], entry["example"], "", OUTCOME[entry["a"]][preference])
            )
    if not labels:
        raise InputError(f"{path}: no labels (every row is blank)")
    return labels
