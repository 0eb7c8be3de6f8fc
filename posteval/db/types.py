"""Column types applied at the storage edge: arbitrary text (NUL bytes included) stored losslessly.

PostgreSQL's TEXT rejects the NUL character, which a model may well produce. ``SafeText`` stores any
string that contains NUL (or that starts with the escape marker) as the marker followed by an escaped
form (``\\`` -> ``\\\\``, NUL -> ``\\0``); every other string is stored unchanged, so existing rows,
SQL queries and other readers see plain text. Decoding reverses it exactly, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Dialect, Text
from sqlalchemy.types import TypeDecorator

MARKER = "\x01posteval-escaped:"


def encode_text(value: str) -> str:
    """``value`` in a form every backend stores: unchanged unless it holds NUL or starts with the marker."""
    if "\x00" not in value and not value.startswith(MARKER):
        return value
    return MARKER + value.replace("\\", "\\\\").replace("\x00", "\\0")


def decode_text(stored: str) -> str:
    """The string :func:`encode_text` was given."""
    if not stored.startswith(MARKER):
        return stored
    out: list[str] = []
    chars = iter(stored[len(MARKER) :])
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        out.append("\x00" if escaped == "0" else escaped)
    return "".join(out)


class SafeText(TypeDecorator[str]):
    """TEXT that round-trips any Python string, NUL bytes included (see the module docstring)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return encode_text(value) if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return decode_text(value) if isinstance(value, str) else value
