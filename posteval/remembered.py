"""Facts derived from content, remembered across processes.

Resolving a run's inputs learns things that only the heavy libraries can compute: that a checkpoint's
weights fit its architecture and its tokenizer loads (transformers), its tokenization policy and chat
template, a dataset's fingerprint and row count (datasets), the few-shot draw, the dtype "auto" gives on
this machine (torch). Each is a pure function of file contents and of the library versions that computed
it, so it is remembered under a key made of exactly those: the files' fingerprints or stat keys (see
:mod:`posteval.hashing`), the installed versions, and posteval's own code (the size and mtime of every
module of the package, so an edited checkout counts as a new version). A changed file, an upgraded
library or edited code is a new key, never a stale answer. A re-run of unchanged inputs then imports
none of those libraries.

Only successes are remembered: a failed check raises and is checked again next time. The index is one
JSON file in the cache directory (``POSTEVAL_HOME/cache``); deleting it only costs the recomputation.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import posteval
from posteval.hashing import JsonIndex, sha256_json
from posteval.settings import get_settings

T = TypeVar("T")

INDEX_NAME = "remembered.json"


@cache
def version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def code_stamp() -> str:
    """posteval's code as it is here: every module's path, size and mtime (a few ms of stat calls)."""
    root = Path(posteval.__file__).resolve().parent
    stamps = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                stat = os.stat(path)
                stamps.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns))
    return sha256_json(sorted(stamps))


def remembered_index() -> Path:
    """The file the facts are remembered in."""
    return get_settings().cache_dir / INDEX_NAME


def _digest(kind: str, key: Sequence[object], libraries: Sequence[str]) -> str:
    versions = {name: version(name) for name in ("posteval", *libraries)}
    return sha256_json([kind, list(key), versions, code_stamp()])


def forget(kind: str, key: Sequence[object], *, libraries: Sequence[str] = ()) -> None:
    """Drop what :func:`remembered` keeps for ``kind`` and ``key``: the next call computes it again."""
    JsonIndex(remembered_index()).drop(_digest(kind, key, libraries))


def remembered(
    kind: str,
    key: Sequence[object],
    compute: Callable[[], T],
    *,
    libraries: Sequence[str] = (),
    encode: Callable[[T], Any] = lambda value: value,
    decode: Callable[[Any], T] = lambda stored: stored,
) -> T:
    """``compute()``, or what it returned before for the same ``kind``, ``key`` and library versions.

    ``key`` must name everything the result depends on besides the ``libraries`` (and posteval, always
    part of the key). ``encode``/``decode`` turn the value into JSON and back.
    """
    digest = _digest(kind, key, libraries)
    index = JsonIndex(remembered_index())
    stored = index.entries().get(digest)
    if stored is not None:
        return decode(stored["value"])
    value = compute()
    index.put(digest, {"kind": kind, "value": encode(value)})
    return value
