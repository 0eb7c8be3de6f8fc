"""Held-out sets through `datasets`: loading, row validation and content fingerprints.

Supported: ``.jsonl``/``.json``, ``.csv``, ``.parquet`` files and folders written by
``Dataset.save_to_disk`` (or a ``DatasetDict``, with the suite's ``split``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from posteval.errors import DatasetError
from posteval.hashing import FileHashCache, fingerprint_files, sha256_json
from posteval.inputs.hub import Snapshot, load_hub_rows, split_revision
from posteval.inputs.readers import check_parquet, read_csv, read_jsonl
from posteval.inputs.suite import DatasetSpec, hub_id, template_fields
from posteval.settings import get_settings

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

log = logging.getLogger(__name__)


@cache
def _datasets() -> ModuleType:
    """`datasets`, imported where a file needs it (JSON lines and CSV are read without it)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors reach the user through ours
    return datasets


@dataclass(frozen=True)
class LoadedDataset:
    """A validated dataset: its rows in file order, their keys, and the content fingerprint."""

    spec: DatasetSpec
    rows: list[dict[str, Any]]
    keys: list[str]
    fingerprint: str
    source: str | None = None  # a hub dataset's resolved ``hf://ORG/NAME@COMMIT``

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def references(self) -> list[Any] | None:
        """The reference field of every row, or None where the dataset has no references."""
        if self.spec.reference is None:
            return None
        return [row[self.spec.reference] for row in self.rows]

    def choice_lists(self) -> list[list[str]]:
        """Each row's choices (multiple choice): the suite's labels, or the row's ``choices`` field."""
        if self.spec.choices is not None:
            return [[str(c) for c in row[self.spec.choices]] for row in self.rows]
        return [list(self.spec.labels or []) for _ in self.rows]

    def gold_choices(self) -> list[str] | None:
        """Each row's correct choice as text: the reference, or the choice a reference index names."""
        references = self.references
        if references is None:
            return None
        return [
            choices[ref] if _is_index(ref) else str(ref)
            for ref, choices in zip(references, self.choice_lists(), strict=True)
        ]

    def prompts(self) -> list[str]:
        """The prompt template filled from every row."""
        if self.spec.prompt is None:
            raise DatasetError(f"dataset {self.spec.name!r} has no prompt template")
        return [self.spec.prompt.format(**row) for row in self.rows]

    def texts(self) -> list[str]:
        """The scored text of every row (perplexity datasets): the template filled, else the text field."""
        if self.spec.prompt is not None:
            return self.prompts()
        return [str(row[self.spec.text]) for row in self.rows]


def _where(spec: DatasetSpec, index: int, lines: list[int] | None) -> str:
    """Where row ``index`` sits: its file line for JSONL and CSV, else its row number."""
    if lines is not None:
        return f"{spec.path}:{lines[index]}"
    return f"{spec.path} row {index}"


MAX_KEY_LENGTH = 255


def _read_rows(spec: DatasetSpec) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The rows of the dataset, and for the line-based formats (JSONL, CSV) each row's file line."""
    path = spec.path
    if not path.exists():
        raise DatasetError(f"dataset {spec.name!r}: file not found: {path}")
    suffix = path.suffix.lower()
    if path.is_file() and suffix == ".jsonl":
        return read_jsonl(spec.name, path)
    if path.is_file() and suffix == ".csv":
        return read_csv(spec.name, path)
    datasets = _datasets()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise DatasetError(
                f"dataset {spec.name!r}: {path} is not a saved `datasets` folder: {exc}"
            ) from exc
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split is None or spec.split not in loaded:
                raise DatasetError(
                    f"dataset {spec.name!r}: {path} holds splits {sorted(loaded)}; name one with 'split'"
                )
            loaded = loaded[spec.split]
        return [dict(row) for row in loaded], None
    builder = _BUILDERS.get(suffix)
    if builder is None:
        raise DatasetError(
            f"dataset {spec.name!r}: {path}: unsupported file type {path.suffix!r} "
            f"(expected one of {', '.join(sorted(_BUILDERS))} or a saved dataset folder)"
        )
    if builder == "parquet":
        check_parquet(spec.name, path)
    elif path.stat().st_size == 0:
        raise DatasetError(f"dataset {spec.name!r}: {path} is empty (expected a JSON array or JSON lines)")
    # `datasets` keys its Arrow cache on the file's path and mtime, which a copy with preserved times
    # (cp -p, rsync -a) keeps: a cache folder per content hash means new content is never served stale.
    cache_dir = get_settings().cache_dir / "datasets" / FileHashCache().file_sha256(path)[:16]
    try:
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache_dir))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"dataset {spec.name!r}: cannot load {path}: {reason}") from exc
    return [dict(row) for row in loaded], None


def _validate_rows(spec: DatasetSpec, rows: list[dict[str, Any]], lines: list[int] | None) -> list[str]:
    if not rows:
        raise DatasetError(f"dataset {spec.name!r}: {spec.path} has no rows")
    needed = spec.prompt_fields()
    text_fields = template_fields(spec.prompt) if spec.prompt else [spec.text]  # what becomes model input
    for index, row in enumerate(rows):
        missing = [field for field in needed if row.get(field) is None]
        if missing:
            raise DatasetError(
                f"dataset {spec.name!r}: {_where(spec, index, lines)}: missing field(s) {missing} "
                f"named by the suite (row has {sorted(k for k, v in row.items() if v is not None)})"
            )
        for name in text_fields:
            value = row[name]
            if not isinstance(value, str):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                raise DatasetError(
                    f"dataset {spec.name!r}: {_where(spec, index, lines)}: field {name!r} is "
                    f"{type(value).__name__} {shown}, expected text (a string; quote it if you mean text)"
                )
        if spec.prompt is not None:
            try:
                spec.prompt.format(**row)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                raise DatasetError(
                    f"dataset {spec.name!r}: {_where(spec, index, lines)}: the prompt template "
                    f"{spec.prompt!r} cannot be filled from this row: {type(exc).__name__}: {exc}"
                ) from exc
    if spec.kind == "code":
        _validate_code(spec, rows, lines)
    if spec.scoring == "loglikelihood":
        _validate_choices(spec, rows, lines)
    elif spec.labels and spec.reference:
        unknown = sorted({str(row[spec.reference]) for row in rows} - set(spec.labels))
        if unknown:
            raise DatasetError(
                f"dataset {spec.name!r}: references {unknown} are not in the label set {spec.labels}"
            )
    if spec.key is None:
        return [str(index) for index in range(len(rows))]
    keys = [str(row[spec.key]) for row in rows]
    too_long = [i for i, key in enumerate(keys) if len(key) > MAX_KEY_LENGTH]
    if too_long:
        raise DatasetError(
            f"dataset {spec.name!r}: {_where(spec, too_long[0], lines)}: key field {spec.key!r} is "
            f"{len(keys[too_long[0]])} characters long (at most {MAX_KEY_LENGTH}); use a shorter id field"
        )
    first: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key in first:
            shown = repr(key) if len(key) <= 40 else repr(key[:37]) + "..."
            raise DatasetError(
                f"dataset {spec.name!r}: {_where(spec, index, lines)}: key field {spec.key!r} is not unique "
                f"({shown} is also the key of "
                + (f"line {lines[first[key]]})" if lines is not None else f"row {first[key]})")
            )
        first[key] = index
    return keys


def _validate_code(spec: DatasetSpec, rows: list[dict[str, Any]], lines: list[int] | None) -> None:
    """HumanEval/MBPP rows: tests as code or a list of assert lines; an entry point, if any, a name."""
    for index, row in enumerate(rows):
        where = f"dataset {spec.name!r}: {_where(spec, index, lines)}"
        tests = row[spec.tests]
        if not (
            isinstance(tests, str) or (isinstance(tests, list) and all(isinstance(t, str) for t in tests))
        ):
            raise DatasetError(
                f"{where}: field {spec.tests!r} must be test code (a string) or a list of assert lines, "
                f"got {type(tests).__name__}"
            )
        entry = row.get(spec.entry_point)
        if entry is not None and not (isinstance(entry, str) and entry.isidentifier()):
            raise DatasetError(f"{where}: field {spec.entry_point!r} must be a function name, got {entry!r}")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_choices(spec: DatasetSpec, rows: list[dict[str, Any]], lines: list[int] | None) -> None:
    """Multiple choice: every row has distinct choices, and its gold is an index into them or one of them."""
    for index, row in enumerate(rows):
        where = f"dataset {spec.name!r}: {_where(spec, index, lines)}"
        choices = spec.labels
        if spec.choices is not None:
            raw = row[spec.choices]
            if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
                raise DatasetError(
                    f"{where}: field {spec.choices!r} must be a non-empty list of strings (the choices), "
                    f"got {raw!r}"
                )
            choices = raw
        choices = choices or []
        if len(set(choices)) != len(choices):
            raise DatasetError(f"{where}: the choices {choices} repeat a choice; each choice once")
        if spec.reference is None:
            continue
        gold = row[spec.reference]
        if _is_index(gold):
            if not 0 <= gold < len(choices):
                raise DatasetError(
                    f"{where}: reference {spec.reference!r} is the index {gold}, outside the "
                    f"{len(choices)} choices {choices}"
                )
        elif not isinstance(gold, str) or gold not in choices:
            raise DatasetError(
                f"{where}: reference {spec.reference!r} is {gold!r}: expected one of the choices {choices} "
                f"or an index 0..{len(choices) - 1}"
            )


def load_dataset(spec: DatasetSpec) -> LoadedDataset:
    """Load, validate and fingerprint the dataset ``spec`` names.

    A hub dataset's fingerprint is its resolved commit with config and split: the commit fixes the files.
    """
    pinned: Snapshot | None = None
    repo_id = hub_id(spec.path)
    if repo_id is not None:
        repo_id, at = split_revision(repo_id)  # a stored location names its commit: hf://ORG/NAME@COMMIT
        rows, pinned = load_hub_rows(
            spec.name, repo_id, config=spec.config, split=spec.split, revision=at or spec.revision
        )
        lines = None
    else:
        rows, lines = _read_rows(spec)
    if spec.limit is not None:
        rows = rows[: spec.limit]
    keys = _validate_rows(spec, rows, lines)
    path = spec.path
    if pinned is not None:
        fingerprint = sha256_json(
            ["hf", pinned.repo_id, pinned.revision, spec.config, spec.split, spec.limit]
        )
        return LoadedDataset(
            spec=spec, rows=rows, keys=keys, fingerprint=fingerprint, source=pinned.location()
        )
    if path.is_dir():
        content = fingerprint_files(path, sorted(p for p in path.rglob("*") if p.is_file()))
    else:  # a single file: its content alone, so renaming or moving it keeps the fingerprint
        content = FileHashCache().file_sha256(path)
    fingerprint = sha256_json([content, spec.split, spec.limit])
    log.debug("loaded dataset %s: %d rows, fingerprint %s", spec.name, len(rows), fingerprint[:12])
    return LoadedDataset(spec=spec, rows=rows, keys=keys, fingerprint=fingerprint)
