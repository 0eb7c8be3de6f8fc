"""Fingerprint caches cannot go stale: content copied over a file with preserved times (``cp -p``,
``rsync -a``, ``shutil.copy2``) and the same size is hashed again, for weights and for datasets."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.hashing import FileHashCache
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.suite import load_suite
from posteval.pipeline import config_hash, load, prepare_dataset, register_run
from tests.helpers import small_suite

SUITE = """\
name: stale
allow_incomplete: true
datasets:
  - name: qa
    path: qa.jsonl
    prompt: "Q: {q}"
    reference: a
    metrics: [exact_match]
"""


def _copy_over_with_preserved_times(source: Path, target: Path) -> None:
    """``cp -p source target`` where source has target's size and target's old times."""
    old = target.stat()
    assert source.stat().st_size == old.st_size
    os.utime(source, ns=(old.st_atime_ns, old.st_mtime_ns))
    shutil.copy2(source, target)
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)


def test_a_file_copied_over_with_preserved_times_is_hashed_again(tmp_path: Path) -> None:
    cache = FileHashCache(tmp_path / "index.json")
    target, source = tmp_path / "weights.bin", tmp_path / "new.bin"
    target.write_bytes(b"A" * 4096)
    assert cache.file_sha256(target) == hashlib.sha256(b"A" * 4096).hexdigest()
    source.write_bytes(b"B" * 4096)
    _copy_over_with_preserved_times(source, target)
    assert cache.file_sha256(target) == hashlib.sha256(b"B" * 4096).hexdigest()
    # A fresh cache reading the same index agrees: the stored entry is keyed on what the copy changed.
    assert (
        FileHashCache(tmp_path / "index.json").file_sha256(target) == hashlib.sha256(b"B" * 4096).hexdigest()
    )


def test_new_weights_copied_over_old_ones_make_a_new_fingerprint_and_a_new_run(
    tmp_path: Path, finetuned_checkpoint: Path, sqlite_url: str
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(finetuned_checkpoint, folder)
    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n')
    (tmp_path / "suite.yaml").write_text(SUITE)
    loaded = load_suite(tmp_path / "suite.yaml")
    datasets = [prepare_dataset(spec) for spec in loaded.suite.datasets]

    before = resolve_checkpoint(folder, model_name="stale-weights")
    first = register_run(before, loaded, datasets, trigger="cli", database_url=sqlite_url)
    with session_scope(sqlite_url) as session:
        repo.mark_succeeded(session, first.run_id)

    # Same architecture, different weights: the same file size.
    weights = folder / "model.safetensors"
    old_bytes = weights.read_bytes()
    tensors = load_file(weights)
    changed = {
        name: tensor + 0.01 if tensor.is_floating_point() else tensor for name, tensor in tensors.items()
    }
    save_file(changed, tmp_path / "new.safetensors", metadata={"format": "pt"})
    _copy_over_with_preserved_times(tmp_path / "new.safetensors", weights)
    assert weights.read_bytes() != old_bytes

    after = resolve_checkpoint(folder, model_name="stale-weights")
    assert after.fingerprint != before.fingerprint
    second = register_run(after, loaded, datasets, trigger="cli", database_url=sqlite_url)
    assert (second.created, second.status) == (True, "running")
    assert second.run_id != first.run_id


def test_a_dataset_copied_over_with_preserved_times_is_loaded_again(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n')
    (tmp_path / "suite.yaml").write_text(SUITE)
    spec = load_suite(tmp_path / "suite.yaml").suite.datasets[0]
    assert load(spec).rows == [{"q": "x", "a": "y"}]
    (tmp_path / "new.jsonl").write_text('{"q": "z", "a": "w"}\n')  # the same size
    _copy_over_with_preserved_times(tmp_path / "new.jsonl", tmp_path / "qa.jsonl")
    reloaded = load(spec)
    assert reloaded.rows == [{"q": "z", "a": "w"}]
    assert prepare_dataset(spec).fingerprint == reloaded.fingerprint


def test_the_cache_key_follows_the_key_field_and_the_prompt(
    tmp_path: Path, finetuned_checkpoint: Path
) -> None:
    checkpoint = resolve_checkpoint(finetuned_checkpoint)
    suite = load_suite(small_suite(tmp_path)).suite
    spec = suite.datasets[0]
    base = config_hash(suite, spec, checkpoint)
    assert config_hash(suite, spec.model_copy(update={"key": "id"}), checkpoint) != base
    assert config_hash(suite, spec.model_copy(update={"prompt": "Question: {q}"}), checkpoint) != base
    assert config_hash(suite, spec, checkpoint) == base


def test_outputs_stored_twice_keep_the_first(db_url: str) -> None:
    with session_scope(db_url) as session:
        repo.add_predictions(session, "c" * 64, "d" * 64, "h" * 64, [("k1", "first", {}), ("k2", "b", {})])
    with session_scope(db_url) as session:  # a second worker that computed the same example
        repo.add_predictions(session, "c" * 64, "d" * 64, "h" * 64, [("k1", "second", {}), ("k3", "c", {})])
    with session_scope(db_url) as session:
        stored = repo.cached_outputs(session, "c" * 64, "d" * 64, "h" * 64)
    assert {k: v.output for k, v in stored.items()} == {"k1": "first", "k2": "b", "k3": "c"}
    with session_scope(db_url) as session:  # and again: nothing new, nothing replaced
        repo.add_predictions(session, "c" * 64, "d" * 64, "h" * 64, [("k1", "third", {})])
        assert len(repo.cached_keys(session, "c" * 64, "d" * 64, "h" * 64)) == 3


def test_an_edited_dataset_is_loaded_again_in_the_same_process(tmp_path: Path) -> None:
    import os

    from posteval.pipeline import load

    data = tmp_path / "qa.jsonl"
    data.write_text('{"q": "x", "a": "y"}\n')
    spec = load_suite(small_suite(tmp_path)).suite.datasets[0]
    first = load(spec)
    data.write_text('{"q": "x", "a": "y"}\n{"q": "w", "a": "v"}\n')
    os.utime(data, ns=(first_mtime := data.stat().st_mtime_ns + 10_000_000, first_mtime))
    second = load(spec)
    assert (len(first), len(second)) == (1, 2)
    assert second.fingerprint != first.fingerprint


def test_a_change_of_dtype_makes_a_new_run(
    tmp_path: Path, finetuned_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posteval.pipeline import idempotency_key, prepare_dataset
    from posteval.settings import get_settings

    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n')
    loaded = load_suite(small_suite(tmp_path))
    checkpoint = resolve_checkpoint(finetuned_checkpoint)
    datasets = [prepare_dataset(spec) for spec in loaded.suite.datasets]
    fp32 = idempotency_key(checkpoint, loaded, datasets)
    monkeypatch.setenv("POSTEVAL_DTYPE", "bf16")
    get_settings.cache_clear()
    try:
        assert idempotency_key(checkpoint, loaded, datasets) != fp32
    finally:
        monkeypatch.delenv("POSTEVAL_DTYPE")
        get_settings.cache_clear()
    assert idempotency_key(checkpoint, loaded, datasets) == fp32
