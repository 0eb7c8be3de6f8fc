"""Datasets and checkpoints by hub id, loaded offline from huggingface_hub's cache layout.

The tests build the cache exactly as huggingface_hub writes it (``datasets--ORG--NAME`` and
``models--ORG--NAME`` with ``blobs/``, ``refs/<branch or tag>`` and ``snapshots/<commit>/`` whose files
link to the blobs), switch huggingface_hub offline and load through the real code path:
``snapshot_download``, ``datasets.load_dataset`` and transformers' ``from_pretrained`` (the preflight).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import pytest

from posteval.errors import CheckpointError, DatasetError
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.suite import load_suite
from posteval.pipeline.datasets import prepare_dataset
from posteval.pipeline.resolve import resolve_model
from posteval.runners.chat import prompting
from tests.helpers import heldout_rows

COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40
README = """\
---
configs:
- config_name: clauses
  data_files:
  - split: test
    path: clauses/test.jsonl
  - split: validation
    path: clauses/validation.jsonl
- config_name: other
  data_files:
  - split: test
    path: other/test.jsonl
---
# Contract clauses
"""


def _jsonl(rows: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def cache_repo(cache: Path, kind: str, repo_id: str, commit: str, files: dict[str, bytes], ref: str) -> Path:
    """One commit of a repository in huggingface_hub's cache layout; ``ref`` (branch or tag) names it."""
    repo = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def contracts_repo(hub_cache: Path) -> list[dict[str, object]]:
    """acme/contracts: main at COMMIT_1 (config clauses: test and validation; config other), tag v2."""
    rows = heldout_rows(12)
    files = {
        "README.md": README.encode(),
        "clauses/test.jsonl": _jsonl(rows[:8]),
        "clauses/validation.jsonl": _jsonl(rows[8:]),
        "other/test.jsonl": _jsonl(rows[:2]),
    }
    cache_repo(hub_cache, "dataset", "acme/contracts", COMMIT_1, files, "main")
    files["clauses/test.jsonl"] = _jsonl(rows[:3])
    cache_repo(hub_cache, "dataset", "acme/contracts", COMMIT_2, files, "v2")
    return rows


def _suite(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: hub\nallow_incomplete: true\ndatasets:\n  - name: clauses\n    path: hf://acme/contracts\n"
        '    prompt: "Clause: {text}\\nType:"\n    reference: label\n    key: id\n'
        "    metrics: [exact_match]\n" + "".join(f"    {line}\n" for line in dataset.splitlines())
    )
    return path


def test_a_hub_dataset_loads_offline_with_config_and_split_pinned_to_its_commit(
    contracts_repo: list[dict[str, object]], tmp_path: Path
) -> None:
    spec = load_suite(_suite(tmp_path, "config: clauses\nsplit: test")).suite.datasets[0]
    ref = prepare_dataset(spec)
    assert ref.row_count == 8
    assert ref.location == f"hf://acme/contracts@{COMMIT_1}"
    other = prepare_dataset(spec.model_copy(update={"config": "other"}))
    assert (other.row_count, other.fingerprint != ref.fingerprint) == (2, True)


def test_a_tag_resolves_to_its_own_commit_and_fingerprint(
    contracts_repo: list[dict[str, object]], tmp_path: Path
) -> None:
    main = prepare_dataset(load_suite(_suite(tmp_path, "config: clauses\nsplit: test")).suite.datasets[0])
    tagged_spec = load_suite(_suite(tmp_path, "config: clauses\nsplit: test\nrevision: v2")).suite.datasets[0]
    tagged = prepare_dataset(tagged_spec)
    assert (tagged.row_count, tagged.location) == (3, f"hf://acme/contracts@{COMMIT_2}")
    assert tagged.fingerprint != main.fingerprint


def test_fewshot_draws_from_another_split_of_the_hub_dataset(
    contracts_repo: list[dict[str, object]], tmp_path: Path
) -> None:
    spec = load_suite(
        _suite(tmp_path, "config: clauses\nsplit: test\nfewshot: {n: 2, from: validation, seed: 0}")
    ).suite.datasets[0]
    shots = prompting(load_suite(_suite(tmp_path, "config: clauses")).suite, spec).shots
    validation_ids = {row["id"] for row in contracts_repo[8:]}
    assert len(shots.keys) == 2 and set(shots.keys) <= validation_ids


def test_an_uncached_hub_dataset_fails_in_one_line_naming_the_id_and_the_fetch_command(
    hub_cache: Path, tmp_path: Path
) -> None:
    spec = load_suite(_suite(tmp_path, "split: test")).suite.datasets[0]
    with pytest.raises(DatasetError) as caught:
        prepare_dataset(spec.model_copy(update={"path": Path("hf://acme/missing")}))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("hub dataset acme/missing is not in the local cache")
    assert message.endswith("fetch it with: huggingface-cli download --repo-type dataset acme/missing")


@pytest.fixture
def tiny_repo(hub_cache: Path, base_checkpoint: Path) -> Path:
    files = {p.name: p.read_bytes() for p in base_checkpoint.iterdir() if p.is_file()}
    cache_repo(hub_cache, "model", "acme/tiny", COMMIT_1, files, "main")
    return cache_repo(hub_cache, "model", "acme/tiny", COMMIT_2, files, "v1")


def test_a_hub_checkpoint_resolves_offline_to_its_commit_and_loads(
    tiny_repo: Path, base_checkpoint: Path
) -> None:
    info = resolve_model("hf://acme/tiny")  # the preflight loads the tokenizer and the weights' report
    assert (info.hub_id, info.revision, info.model_name) == ("acme/tiny", COMMIT_1, "tiny")
    assert info.location == f"hf://acme/tiny@{COMMIT_1}"
    assert info.fingerprint == resolve_checkpoint(base_checkpoint).fingerprint  # the same files
    assert resolve_checkpoint("hf://acme/tiny@v1").location == f"hf://acme/tiny@{COMMIT_2}"
    assert resolve_checkpoint(info.location).path == info.path  # the stored location finds it again


def test_an_uncached_hub_checkpoint_fails_naming_the_id_and_the_fetch_command(hub_cache: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        resolve_checkpoint("hf://acme/missing@v3")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("hub model acme/missing at revision 'v3' is not in the local cache")
    assert message.endswith("fetch it with: huggingface-cli download acme/missing --revision v3")


def test_a_run_stores_the_resolved_commits_of_its_hub_checkpoint_and_dataset(
    prefect_harness: None,
    tiny_repo: Path,
    contracts_repo: list[dict[str, object]],
    tmp_path: Path,
    sqlite_url: str,
) -> None:
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from posteval.db.models import Checkpoint, Dataset, EvalRun, Metric
    from posteval.flows.post_training import evaluate_checkpoint

    suite = _suite(tmp_path, "config: clauses\nsplit: test")
    run_id = evaluate_checkpoint(checkpoint="hf://acme/tiny", suite=str(suite), database_url=sqlite_url)
    with Session(create_engine(sqlite_url)) as session:
        run = session.get_one(EvalRun, run_id)
        metric = session.scalars(select(Metric).filter_by(run_id=run_id)).one()
        dataset = session.get_one(Dataset, metric.dataset_id)
        checkpoint = session.get_one(Checkpoint, run.checkpoint_id)
        assert checkpoint.fingerprint  # the weights' row the run points at
        assert (run.status, metric.n) == ("succeeded", 8)
        assert dataset.path == f"hf://acme/contracts@{COMMIT_1}"
        assert dataset.fingerprint == prepare_dataset(load_suite(suite).suite.datasets[0]).fingerprint
        # The run's own path and name: the checkpoint row is keyed by content, and another test may have
        # stored the same weights first under another name.
        assert (run.checkpoint_path, run.model_name) == (f"hf://acme/tiny@{COMMIT_1}", "tiny")
