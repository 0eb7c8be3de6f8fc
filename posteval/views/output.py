"""Rendering DataFrames and records for the terminal: rich tables, JSON or CSV."""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from posteval.numbers import num


class Format(StrEnum):
    """Output formats every listing accepts."""

    table = "table"
    json = "json"
    csv = "csv"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if value is pd.NaT:
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as JSON-ready dicts (datetimes as ISO strings, NaN as null)."""
    return [{k: _plain(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]


def to_json(value: Any) -> str:
    """``value`` as indented JSON, datetimes as ISO strings."""
    return json.dumps(value, indent=2, default=_plain)


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None or isinstance(value, float):
        return num(value)
    if isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return str(value)


def rich_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich table of ``frame`` (floats to 4 places, run ids shortened)."""
    table = Table(title=title, header_style="bold")
    for column in frame.columns:
        table.add_column(str(column), justify="right" if frame[column].dtype.kind in "if" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    return table


def emit(frame: pd.DataFrame, fmt: Format, console: Console, title: str | None = None) -> None:
    """Print ``frame`` in ``fmt``: JSON and CSV go to stdout untouched by rich markup."""
    if fmt is Format.json:
        print(to_json(records(frame)))
    elif fmt is Format.csv:
        print(frame.to_csv(index=False), end="")
    else:
        console.print(rich_table(frame, title))
