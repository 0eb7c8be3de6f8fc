"""What `pip install .` puts into site-packages: one top-level name, `posteval`, holding every module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The repository's top-level folders and where each installs (pyproject.toml's package-dir).
MAPPED = {
    "posteval": "posteval",
    "flows": "posteval/flows",
    "tasks": "posteval/tasks",
    "evaluators": "posteval/evaluators",
}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file names in a wheel built from a clean copy of the sources (no build/ or egg-info here)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in MAPPED:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("posteval-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_adds_only_posteval_and_its_dist_info(wheel_names: list[str]) -> None:
    top = {name.split("/", 1)[0] for name in wheel_names}
    assert top == {"posteval", "posteval-0.1.0.dist-info"}


def test_flows_tasks_and_evaluators_install_inside_posteval(wheel_names: list[str]) -> None:
    for folder, installed in MAPPED.items():
        sources = {
            path.relative_to(ROOT / folder).as_posix()
            for path in (ROOT / folder).rglob("*.py")
            if "__pycache__" not in path.parts
        }
        prefix = installed + "/"
        packaged = {name.removeprefix(prefix) for name in wheel_names if name.startswith(prefix)}
        assert sources <= packaged, f"{folder}/ files missing from the wheel: {sorted(sources - packaged)}"


def test_the_wheel_carries_the_migrations_and_the_report_template(wheel_names: list[str]) -> None:
    assert "posteval/db/migrations/env.py" in wheel_names
    assert "posteval/db/migrations/script.py.mako" in wheel_names
    assert "posteval/db/migrations/versions/0001_initial_schema.py" in wheel_names
    assert "posteval/templates/report.html" in wheel_names


def test_flows_import_only_as_posteval_flows() -> None:
    """The installed mapping is what the tests run against: no top-level `flows`, `tasks` or `evaluators`."""
    code = (
        "import importlib.util, sys; sys.path = [p for p in sys.path if p not in ('', '.')];"
        "import posteval.flows.post_training, posteval.tasks.model, posteval.evaluators.builtin;"
        "print([n for n in ('flows', 'tasks', 'evaluators') if importlib.util.find_spec(n) is not None])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path("/"), check=True
    )
    assert result.stdout.strip() == "[]"
