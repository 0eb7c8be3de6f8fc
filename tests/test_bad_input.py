"""Bad input is refused with a message naming the file, the line or field, and what was expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posteval.errors import CheckpointError, DatasetError, SuiteError
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.data import load_dataset
from posteval.inputs.suite import load_suite

SUITE = """\
name: s
allow_incomplete: true  # a focused test suite, not a full evaluation
datasets:
  - name: qa
    path: {path}
    prompt: "Q: {{question}}\\nA:"
    reference: answer
    metrics: [exact_match]
"""


def _write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _suite(tmp_path: Path, data: str = "qa.jsonl", extra: str = "") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(path=data) + extra)
    return path


def test_missing_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"^checkpoint folder not found: .*/nowhere$"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_checkpoint_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(tmp_path)
    assert str(info.value) == (
        f"checkpoint {tmp_path}: no weights found "
        "(expected one of model.safetensors, pytorch_model.bin, sharded *.safetensors)"
    )


def test_suite_with_unknown_field(tmp_path: Path) -> None:
    path = _suite(tmp_path, extra="colour: blue\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}: colour: unknown field 'colour' (expected one of: name, ")


def test_suite_with_unknown_dataset_field(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(path="qa.jsonl").replace("reference: answer", "refrence: answer"))
    with pytest.raises(SuiteError, match=r"datasets\[0\]\.refrence: unknown field 'refrence'"):
        load_suite(path)


def test_missing_dataset_file(tmp_path: Path) -> None:
    loaded = load_suite(_suite(tmp_path, data="absent.jsonl"))
    with pytest.raises(DatasetError) as info:
        load_dataset(loaded.suite.datasets[0])
    assert str(info.value) == f"dataset 'qa': file not found: {tmp_path / 'absent.jsonl'}"


def test_malformed_jsonl_line_is_named(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": \n')
    loaded = load_suite(_suite(tmp_path))
    with pytest.raises(DatasetError) as info:
        load_dataset(loaded.suite.datasets[0])
    assert str(info.value).startswith(f"dataset 'qa': {data}:2: malformed JSON line (")


def test_prompt_naming_a_field_the_rows_lack(tmp_path: Path) -> None:
    data = _write_rows(tmp_path / "qa.jsonl", [{"question": "a", "answer": "b"}, {"q": "c", "answer": "d"}])
    loaded = load_suite(_suite(tmp_path))
    with pytest.raises(DatasetError) as info:
        load_dataset(loaded.suite.datasets[0])
    assert str(info.value) == (
        f"dataset 'qa': {data}:2: missing field(s) ['question'] named by the suite (row has ['answer', 'q'])"
    )


def test_prompt_template_that_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(path="qa.jsonl").replace("{question}", "{question"))
    with pytest.raises(SuiteError, match=r"datasets\[0\]\.prompt: "):
        load_suite(path)


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"^.*/nope\.yaml: suite file not found$"):
        load_suite(tmp_path / "nope.yaml")


def test_dataset_rows_load_in_file_order_with_keys(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    _write_rows(tmp_path / "qa.jsonl", rows)
    loaded = load_dataset(load_suite(_suite(tmp_path)).suite.datasets[0])
    assert loaded.rows == rows
    assert loaded.keys == ["0", "1", "2", "3", "4"]
    assert loaded.prompts()[3] == "Q: q3\nA:"


def test_dataset_fingerprint_follows_content_not_name(tmp_path: Path) -> None:
    rows = [{"question": "q", "answer": "a"}]
    _write_rows(tmp_path / "qa.jsonl", rows)
    first = load_dataset(load_suite(_suite(tmp_path)).suite.datasets[0]).fingerprint
    (tmp_path / "qa.jsonl").rename(tmp_path / "moved.jsonl")
    moved = load_dataset(load_suite(_suite(tmp_path, data="moved.jsonl")).suite.datasets[0]).fingerprint
    _write_rows(tmp_path / "moved.jsonl", [{"question": "q", "answer": "other"}])
    changed = load_dataset(load_suite(_suite(tmp_path, data="moved.jsonl")).suite.datasets[0]).fingerprint
    assert first == moved
    assert changed != first
