"""The README's suite block and Python API block, executed exactly as written."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from posteval.inputs.suite import load_suite
from posteval.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = ROOT / "examples" / "contracts"


def _block(after: str, language: str) -> str:
    """The first ```language block that follows the text ``after`` in the README."""
    start = README.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


SUITE = _block("A suite is plain YAML:", "yaml")
PYTHON = _block("From Python, a flow run is a function call:", "python")


@pytest.fixture
def readme_folder(
    tmp_path: Path,
    base_checkpoint: Path,
    finetuned_checkpoint: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """A folder laid out as the README's blocks assume: the suite, its data, checkpoints/base, runs/ft-1."""
    for name in ("heldout.jsonl", "general.jsonl", "train.jsonl", "validation.jsonl"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    # choices.jsonl as the README's comment describes its rows: per-row options and the gold as an index.
    labels = ["lease", "nda", "employment"]
    with (tmp_path / "choices.jsonl").open("w") as out:
        for line in (EXAMPLES / "heldout.jsonl").read_text().splitlines():
            row = json.loads(line)
            options = [row["label"], labels[(labels.index(row["label"]) + 1) % 3]][
                :: 1 if len(line) % 2 else -1
            ]
            out.write(
                json.dumps({"text": row["text"], "options": options, "answer": options.index(row["label"])})
            )
            out.write("\n")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "base").symlink_to(base_checkpoint, target_is_directory=True)
    (tmp_path / "runs").mkdir()
    shutil.copytree(finetuned_checkpoint, tmp_path / "runs" / "ft-1")  # its name is the model's name
    (tmp_path / "suite.yaml").write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_readme_suite_loads_as_written(readme_folder: Path) -> None:
    loaded = load_suite(readme_folder / "suite.yaml")
    assert [d.name for d in loaded.suite.datasets] == ["contract-type", "contract-choice", "general-text"]
    assert list(loaded.suite.gates) == ["contract-type/accuracy"]


def test_readme_python_api_runs_as_written(prefect_harness: None, readme_folder: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile(PYTHON, "README.md", "exec"), namespace)
    run_id = namespace["run_id"]
    import posteval

    metrics = posteval.run_metrics(run_id)
    assert {"accuracy", "f1", "perplexity", "bits_per_byte"} <= set(metrics["name"])
    history = posteval.history("accuracy", model="ft-1", dataset="contract-type")
    assert list(history["run_id"]) == [run_id]


def test_readme_custom_metric_block_is_the_tested_custom_metric() -> None:
    """The README's custom metric is the one tests/custom_metrics.py registers, imported from posteval."""
    block = _block("Your own metric:", "python")
    assert "from posteval.evaluators import EvalInputs, register_metric" in block
    tested = (ROOT / "tests" / "custom_metrics.py").read_text()
    assert block.split("\n", 1)[1] == tested[tested.index("from posteval.evaluators") :]
