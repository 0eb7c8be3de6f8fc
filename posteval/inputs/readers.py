"""Line-aware readers for the text formats (JSONL and CSV): every problem names the file and its line.

`datasets` reads these formats too, but it reports a bad byte, a ragged row or a wrong type as a
generic Arrow error (and logs it); reading them here keeps each row's file line for later messages,
keeps every value as written (no type unification across rows), and answers bad input in one line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from posteval.errors import DatasetError

Rows = list[dict[str, Any]]


def _text(name: str, path: Path, expected: str) -> str:
    """The file decoded as UTF-8 (a BOM is dropped); empty files and bad bytes name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"dataset {name!r}: cannot read {path}: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise DatasetError(f"dataset {name!r}: {path} is empty (expected {expected})")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DatasetError(
            f"dataset {name!r}: {path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
            f"{column}); save the file as UTF-8"
        ) from exc


def read_jsonl(name: str, path: Path) -> tuple[Rows, list[int]]:
    """The JSON object on every non-blank line, and each one's line number."""
    text = _text(name, path, "one JSON object per line")
    rows: Rows = []
    lines: list[int] = []
    for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): JSON allows U+2028
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"dataset {name!r}: {path}:{lineno}: malformed JSON line ({exc.msg} at column {exc.colno})"
            ) from exc
        except RecursionError as exc:
            raise DatasetError(f"dataset {name!r}: {path}:{lineno}: JSON nested too deeply") from exc
        if not isinstance(value, dict):
            raise DatasetError(
                f"dataset {name!r}: {path}:{lineno}: expected a JSON object per line, "
                f"got {type(value).__name__}"
            )
        rows.append(value)
        lines.append(lineno)
    return rows, lines


def read_csv(name: str, path: Path) -> tuple[Rows, list[int]]:
    """Rows of a CSV file with a header line, values as text (an empty cell is missing), and their lines.

    A record with more or fewer fields than the header is refused naming its line.
    """
    text = _text(name, path, "a header line, then one record per line")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        if not any(cell.strip() for cell in header):
            raise DatasetError(f"dataset {name!r}: {path}:1: the header line is blank")
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise DatasetError(f"dataset {name!r}: {path}:1: the header names {dupes} more than once")
        rows: Rows = []
        lines: list[int] = []
        start = reader.line_num + 1
        for record in reader:
            if record:  # a blank line holds no record
                if len(record) != len(header):
                    raise DatasetError(
                        f"dataset {name!r}: {path}:{start}: {len(record)} field(s), "
                        f"the header (line 1) names {len(header)}"
                    )
                cells = zip(header, record, strict=True)
                rows.append({key: (value if value != "" else None) for key, value in cells})
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(f"dataset {name!r}: {path}:{reader.line_num}: malformed CSV ({exc})") from exc
    return rows, lines


def check_parquet(name: str, path: Path) -> None:
    """Refuse a file that is not Parquet (empty, truncated, other) before `datasets` logs about it."""
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise DatasetError(f"dataset {name!r}: {path} is empty (expected a Parquet file)")
    try:
        pq.ParquetFile(path).schema_arrow  # noqa: B018 - reading the footer is the check
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        raise DatasetError(
            f"dataset {name!r}: {path} is not a readable Parquet file ({str(exc) or type(exc).__name__})"
        ) from exc
