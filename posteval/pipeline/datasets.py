"""The dataset cache: each held-out set loaded, validated and fingerprinted once per process while its
files are unchanged, and its fingerprint and row count remembered across processes
(:mod:`posteval.remembered`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from posteval.hashing import path_stamp
from posteval.inputs.data import LoadedDataset, load_dataset
from posteval.inputs.suite import DatasetSpec
from posteval.remembered import remembered


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


def load(spec: DatasetSpec) -> LoadedDataset:
    """The dataset ``spec`` names, loaded once per process while its files are unchanged."""
    return _load_cached(spec.model_dump_json(), path_stamp(spec.path))


def prepare_dataset(spec: DatasetSpec) -> DatasetRef:
    """Load, validate and fingerprint one dataset; for unchanged local files, what that gave last time.

    Validation and the fingerprint depend only on the spec and the files (their stat keys name their
    content), so a re-run of the same files imports no `datasets` and reads no row. A hub dataset's
    revision is resolved anew each time.
    """
    spec_json, stamp = spec.model_dump_json(), path_stamp(spec.path)
    if not stamp:
        return _ref(spec, _load_cached(spec_json, stamp))
    facts = remembered(
        "dataset",
        [spec_json, stamp],
        lambda: _facts(_ref(spec, _load_cached(spec_json, stamp))),
        libraries=("datasets", "pyarrow"),
    )
    return DatasetRef(spec=spec, **facts)


def _facts(ref: DatasetRef) -> dict[str, Any]:
    return {"fingerprint": ref.fingerprint, "row_count": ref.row_count, "location": ref.location}


def _ref(spec: DatasetSpec, loaded: LoadedDataset) -> DatasetRef:
    return DatasetRef(
        spec=spec,
        fingerprint=loaded.fingerprint,
        row_count=len(loaded),
        location=loaded.source or str(spec.path),
    )
