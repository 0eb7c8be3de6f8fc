"""The dataset cache: each held-out set loaded, validated and fingerprinted once per process while its
files are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from posteval.hashing import stat_key
from posteval.inputs.data import LoadedDataset, load_dataset
from posteval.inputs.suite import DatasetSpec


@dataclass(frozen=True)
class DatasetRef:
    """A loaded dataset as passed between stages: its spec and content identity, not its rows."""

    spec: DatasetSpec
    fingerprint: str
    row_count: int
    location: str = ""  # where the rows came from as stored: the path, or hf://ORG/NAME@COMMIT


@lru_cache(maxsize=16)
def _load_cached(spec_json: str, stamp: tuple[str, ...]) -> LoadedDataset:
    return load_dataset(DatasetSpec.model_validate_json(spec_json))


def _stamp(path: Path) -> tuple[str, ...]:
    """Every file's :func:`~posteval.hashing.stat_key` (path, inode, size, mtime, ctime), sorted.

    An edited dataset is loaded again, not served stale, even when it was copied over with preserved
    times and the same total size.
    """
    if not path.exists():
        return ()
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return tuple(sorted(stat_key(f) for f in files))


def load(spec: DatasetSpec) -> LoadedDataset:
    """The dataset ``spec`` names, loaded once per process while its files are unchanged."""
    return _load_cached(spec.model_dump_json(), _stamp(spec.path))


def prepare_dataset(spec: DatasetSpec) -> DatasetRef:
    """Load, validate and fingerprint one dataset."""
    loaded = load(spec)
    return DatasetRef(
        spec=spec,
        fingerprint=loaded.fingerprint,
        row_count=len(loaded),
        location=loaded.source or str(spec.path),
    )
