"""Content fingerprints: sha256 of files, remembered by what a copy or a rewrite changes (path, inode,
size, mtime and ctime), so a large file is hashed once and a file replaced with preserved times
(``cp -p``, ``rsync -a``) is hashed again."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from posteval.settings import get_settings

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of ``value`` as canonical JSON (sorted keys, no whitespace)."""
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode())


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stat_key(path: Path) -> str:
    """What identifies a file's current content without reading it: absolute path, device and inode, size,
    mtime and ctime (nanoseconds).

    Size and mtime alone go stale: weights of one architecture always have the same size, and ``cp -p``
    or ``rsync -a`` keep the old mtime. Writing content (or setting the times back) always moves ctime,
    and a file put in place by rename has a new inode, so either way the key changes.
    """
    stat = path.stat()
    return (
        f"{path.resolve()}|{stat.st_dev}:{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
    )


def path_stamp(path: Path, *, recursive: bool = True) -> tuple[str, ...]:
    """Every file's :func:`stat_key` under ``path`` (a file, or a folder's files: all, or only its own
    with ``recursive=False``), sorted; empty when nothing is there.

    What identifies the content of everything a loader may read there, without reading it: an edited
    file changes the stamp even when copied over with preserved times and the same total size.
    """
    if not path.exists():
        return ()
    if not path.is_dir():
        return (stat_key(path),)
    files = path.rglob("*") if recursive else path.iterdir()
    return tuple(sorted(stat_key(f) for f in files if f.is_file()))


class JsonIndex:
    """A small JSON object on disk, read once per instance and replaced atomically on every change, so
    concurrent processes never read half a file. A change re-reads the file first, so it keeps what other
    processes wrote meanwhile (two writing at the same instant may still lose one entry: a recomputation).
    """

    def __init__(self, index_path: Path) -> None:
        self.index_path = index_path
        self._entries: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def entries(self) -> dict[str, Any]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` and write the index."""
        self._write(lambda entries: entries.__setitem__(key, value))

    def drop(self, key: str) -> None:
        """Remove ``key`` (if there) and write the index."""
        self._write(lambda entries: entries.pop(key, None))

    def _write(self, change: Callable[[dict[str, Any]], object]) -> None:
        self._entries = self._read()
        change(self._entries)
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.index_path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(self._entries, handle)
        os.replace(tmp, self.index_path)


class FileHashCache:
    """A JSON index from a file's :func:`stat_key` to its sha256."""

    def __init__(self, index_path: Path | None = None) -> None:
        self.index = JsonIndex(index_path or get_settings().cache_dir / "file_hashes.json")

    def file_sha256(self, path: Path) -> str:
        """sha256 of ``path``'s content, from the index when nothing a copy or rewrite changes has changed."""
        key = stat_key(path)
        known = self.index.entries().get(key)
        if not isinstance(known, str):
            known = _hash_file(path)
            self.index.put(key, known)
        return known


def fingerprint_files(root: Path, files: Iterable[Path], cache: FileHashCache | None = None) -> str:
    """One fingerprint over ``files`` (names relative to ``root`` and their contents), order-independent."""
    cache = cache or FileHashCache()
    entries = sorted((str(f.relative_to(root)), cache.file_sha256(f)) for f in files)
    return sha256_json(entries)
