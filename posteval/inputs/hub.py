"""Datasets and checkpoints named by Hugging Face hub id (``hf://ORG/NAME``), pinned to a resolved commit.

Both go through huggingface_hub's cache (``HF_HUB_CACHE``): the repository's snapshot is resolved with
``snapshot_download`` (offline, ``HF_HUB_OFFLINE=1``, it only reads the cache), and the snapshot's folder
name is the commit that is stored with the fingerprint. A dataset snapshot is then read by
``datasets.load_dataset`` with its config and split: `datasets` offline looks only in its own prepared
cache, never in the hub cache, so posteval hands it the snapshot folder (whose README configs it reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from posteval.errors import CheckpointError, DatasetError
from posteval.settings import get_settings

RepoType = Literal["model", "dataset"]


@dataclass(frozen=True)
class Snapshot:
    """A hub repository resolved to one commit, and the local folder holding that commit's files."""

    repo_id: str
    revision: str  # the commit hash
    folder: Path

    def location(self) -> str:
        """``hf://ORG/NAME@COMMIT``: what is stored for it, and accepted back to find the same files."""
        return f"hf://{self.repo_id}@{self.revision}"


def split_revision(spec: str) -> tuple[str, str | None]:
    """``ORG/NAME@REVISION`` as (``ORG/NAME``, ``REVISION``); no ``@`` gives (spec, None)."""
    repo_id, sep, revision = spec.partition("@")
    return repo_id, (revision or None) if sep else None


def fetch_hint(repo_id: str, repo_type: RepoType, revision: str | None) -> str:
    """The command that puts ``repo_id`` into the local hub cache."""
    kind = " --repo-type dataset" if repo_type == "dataset" else ""
    pinned = f" --revision {revision}" if revision else ""
    return f"huggingface-cli download{kind} {repo_id}{pinned}"


def snapshot(repo_id: str, repo_type: RepoType, revision: str | None = None) -> Snapshot:
    """The cached (offline) or downloaded snapshot of ``repo_id`` at ``revision`` (default: main).

    Raises the input's PostevalError with one line naming the id and how to fetch it when it is not there.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import HFValidationError

    error = DatasetError if repo_type == "dataset" else CheckpointError
    what = "dataset" if repo_type == "dataset" else "model"
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise error(f"hub {what} id {repo_id!r}: expected hf://ORG/NAME")
    try:
        folder = Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision))
    except LocalEntryNotFoundError as exc:
        at = f" at revision {revision!r}" if revision else ""
        raise error(
            f"hub {what} {repo_id}{at} is not in the local cache and the hub cannot be reached "
            f"(HF_HUB_OFFLINE or no network); fetch it with: {fetch_hint(repo_id, repo_type, revision)}"
        ) from exc
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"hub {what} {repo_id}: cannot resolve revision {revision or 'main'}: {reason}") from exc
    return Snapshot(repo_id=repo_id, revision=folder.name, folder=folder)


def load_hub_rows(
    name: str, repo_id: str, *, config: str | None, split: str | None, revision: str | None
) -> tuple[list[dict[str, Any]], Snapshot]:
    """The rows of split ``split`` (default ``test``) of hub dataset ``repo_id``, through `datasets`."""
    import datasets

    pinned = snapshot(repo_id, "dataset", revision)
    wanted = split or "test"
    try:
        cache = get_settings().cache_dir / "datasets" / "hub"  # the snapshot's path names its commit
        loaded = datasets.load_dataset(str(pinned.folder), name=config, split=wanted, cache_dir=str(cache))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(
            f"dataset {name!r}: cannot load hub dataset {repo_id}@{pinned.revision} "
            f"(config {config!r}, split {wanted!r}): {reason}"
        ) from exc
    return [dict(row) for row in loaded], pinned
