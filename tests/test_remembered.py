"""Facts remembered across processes (posteval.remembered): computed once per content and library version,
never served for changed files, upgraded libraries or after a failure; what a re-run then skips."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from posteval import remembered as remembered_module
from posteval.errors import CheckpointError, DatasetError, RunnerError
from posteval.inputs import preflight as preflight_module
from posteval.inputs.suite import DatasetSpec
from posteval.pipeline import datasets as datasets_module
from posteval.pipeline.datasets import prepare_dataset
from posteval.pipeline.resolve import resolve_model
from posteval.remembered import remembered, remembered_index
from posteval.runners import check_dtype, dtype_name
from tests.helpers import heldout_rows, write_jsonl


@pytest.fixture(autouse=True)
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test remembers into its own POSTEVAL_HOME, and starts with no in-process memo."""
    from posteval.settings import get_settings

    monkeypatch.setenv("POSTEVAL_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    monkeypatch.setattr(preflight_module, "_passed", set())
    datasets_module._load_cached.cache_clear()


def test_a_fact_is_computed_once_per_key_and_library_version(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def compute() -> dict[str, int]:
        calls.append("computed")
        return {"answer": len(calls)}

    assert remembered("kind", ["a"], compute, libraries=("torch",)) == {"answer": 1}
    assert remembered("kind", ["a"], compute, libraries=("torch",)) == {"answer": 1}
    assert remembered("kind", ["b"], compute, libraries=("torch",)) == {"answer": 2}
    assert remembered("other kind", ["a"], compute, libraries=("torch",)) == {"answer": 3}
    stored = json.loads(remembered_index().read_text())
    assert sorted(entry["kind"] for entry in stored.values()) == ["kind", "kind", "other kind"]
    # An upgraded library is a new key: computed again.
    real = remembered_module.version
    monkeypatch.setattr(remembered_module, "version", lambda name: "9.9" if name == "torch" else real(name))
    assert remembered("kind", ["a"], compute, libraries=("torch",)) == {"answer": 4}


def test_a_failure_is_never_remembered() -> None:
    attempts = []

    def failing() -> bool:
        attempts.append(1)
        raise CheckpointError("broken")

    for _ in range(2):
        with pytest.raises(CheckpointError, match="broken"):
            remembered("check", ["x"], failing)
    assert len(attempts) == 2
    assert not remembered_index().exists()


def test_edited_code_is_a_new_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    remembered("kind", ["a"], lambda: calls.append(1))
    monkeypatch.setattr(remembered_module, "code_stamp", lambda: "an edited checkout")
    remembered("kind", ["a"], lambda: calls.append(1))
    assert len(calls) == 2


def _spec(path: Path) -> DatasetSpec:
    return DatasetSpec(
        name="clauses",
        path=path,
        key="id",
        prompt="Clause: {text}\nType:",
        reference="label",
        metrics=["accuracy"],
    )


def test_an_unchanged_dataset_is_not_read_again_and_an_edited_one_is_validated_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "clauses.jsonl", heldout_rows(6))
    first = prepare_dataset(_spec(path))
    assert first.row_count == 6

    def no_reading(spec: DatasetSpec) -> None:
        raise AssertionError(f"{spec.path} was read again")

    datasets_module._load_cached.cache_clear()  # as in a new process
    monkeypatch.setattr(datasets_module, "load_dataset", no_reading)
    assert prepare_dataset(_spec(path)) == first  # remembered: no row read, no `datasets`
    monkeypatch.undo()
    monkeypatch.setenv("POSTEVAL_HOME", str(tmp_path / "home"))

    # The same size and modification time, one row without its reference: a copy with preserved times.
    stat = path.stat()
    rows = heldout_rows(6)
    rows[3] = {("lable" if field == "label" else field): value for field, value in rows[3].items()}
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(DatasetError, match=re.escape(f"{path}:4: missing field(s) ['label']")):
        prepare_dataset(_spec(path))


def test_a_checkpoint_that_passed_is_not_loaded_again_until_its_files_change(
    tmp_path: Path, base_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    shutil.copytree(base_checkpoint, model)
    resolve_model(str(model))  # the architecture and tokenizer checks pass, and are remembered

    def not_again(folder: Path) -> None:
        raise AssertionError(f"{folder} was loaded again")

    monkeypatch.setattr(preflight_module, "check_architecture", not_again)
    monkeypatch.setattr(preflight_module, "check_tokenizer", not_again)
    monkeypatch.setattr(preflight_module, "_passed", set())
    resolve_model(str(model))  # same files: neither transformers check runs
    monkeypatch.undo()
    monkeypatch.setenv("POSTEVAL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(preflight_module, "_passed", set())

    # A config that no longer fits the weights is found, although this folder passed before.
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "n_layer": config["n_layer"] + 1}))
    with pytest.raises(CheckpointError, match="the weights do not fit"):
        resolve_model(str(model))


def test_the_model_stage_refuses_a_dtype_other_than_the_remembered_one() -> None:
    import torch

    check_dtype(object(), "auto", "auto")  # type: ignore[arg-type]  # a served model has no dtype of ours
    assert not remembered_index().exists()  # and nothing was resolved (nor torch needed) for it

    assert dtype_name("cpu", "auto") == "torch.float32"  # remembered, as the runner picks it on a CPU

    class Loaded:
        device = "cpu"

        def __init__(self, dtype: torch.dtype) -> None:
            self.dtype = dtype

    check_dtype(Loaded(torch.float32), "cpu", "auto")  # type: ignore[arg-type]
    expected = (
        r"the model loaded as torch.bfloat16 on cpu, but this machine was remembered to give torch.float32 "
        r"for device=cpu dtype=auto \(its GPU changed\?\): that answer is dropped; evaluate again"
    )
    with pytest.raises(RunnerError, match=expected):
        check_dtype(Loaded(torch.bfloat16), "cpu", "auto")  # type: ignore[arg-type]
    assert json.loads(remembered_index().read_text()) == {}  # the next run resolves the dtype anew


def test_the_index_keeps_what_another_process_wrote_meanwhile(tmp_path: Path) -> None:
    from posteval.hashing import JsonIndex

    mine, theirs = JsonIndex(tmp_path / "index.json"), JsonIndex(tmp_path / "index.json")
    assert mine.entries() == {}  # read before the other process writes
    theirs.put("theirs", 1)
    mine.put("mine", 2)
    assert json.loads((tmp_path / "index.json").read_text()) == {"theirs": 1, "mine": 2}
    mine.drop("theirs")
    assert JsonIndex(tmp_path / "index.json").entries() == {"mine": 2}


def test_a_chat_template_added_under_additional_chat_templates_is_read_again(
    tmp_path: Path, base_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posteval.runners import chat

    model = tmp_path / "model"
    shutil.copytree(base_checkpoint, model)
    loads: list[str] = []
    real = chat._tokenizer.__wrapped__

    def counted(folder: str) -> Any:
        loads.append(folder)
        return real(folder)

    monkeypatch.setattr(chat, "_tokenizer", counted)
    first = chat.checkpoint_template(model)
    assert chat.checkpoint_template(model) == first and len(loads) == 1  # remembered
    (model / "additional_chat_templates").mkdir()
    (model / "additional_chat_templates" / "tool_use.jinja").write_text("{{ messages }}")
    chat.checkpoint_template(model)
    assert len(loads) == 2  # a new file there is a new key: the tokenizer is read again
