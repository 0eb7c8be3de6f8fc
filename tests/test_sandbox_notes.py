"""A sandbox never pretends: a protection missing on this machine is named in each result and in the
run's warnings, and a backend that cannot run at all is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import posteval.sandbox.bubblewrap as bubblewrap_module
import posteval.sandbox.local as local_module
from posteval.errors import SandboxError
from posteval.inputs.data import load_dataset
from posteval.inputs.suite import load_suite
from posteval.pipeline.code import execute
from posteval.sandbox import get_backend
from tests.sandbox_helpers import assert_host_unharmed, judge

NOTE = (
    "no network, PID or /proc isolation (unshare (util-linux) is not installed): programs can open "
    "sockets and see other processes"
)


@pytest.fixture
def no_unshare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        local_module, "_unshare_works", lambda as_root: "unshare (util-linux) is not installed"
    )


def test_without_unshare_each_result_names_what_is_missing(no_unshare: None) -> None:
    execution = judge(
        "local", "def f():\n    return 1\n", "def check(candidate):\n    assert candidate() == 1\n", "f"
    )
    assert (execution.status, execution.notes) == ("passed", (NOTE,))
    assert_host_unharmed()


def test_without_unshare_the_run_warnings_say_so(no_unshare: None, tmp_path: Path) -> None:
    row = {"task_id": "t1", "prompt": "def f():\n", "test": "assert f() == 1\n", "entry_point": "f"}
    (tmp_path / "p.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "s.yaml").write_text(
        "name: s\nallow_incomplete: true\ndatasets:\n  - {name: p, path: p.jsonl, kind: code,"
        " prompt: '{prompt}', key: task_id, metrics: [pass_rate]}\n"
    )
    loaded = load_dataset(load_suite(tmp_path / "s.yaml").suite.dataset("p"))
    executions, warnings = execute(loaded, {"t1#0": "    return 1\n"})
    assert [[e["status"] for e in samples] for samples in executions] == [["passed"]]
    assert warnings == [f"p: sandbox local: {NOTE}"]


def test_bubblewrap_without_bwrap_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bubblewrap_module.shutil, "which", lambda name: None)
    with pytest.raises(SandboxError) as caught:
        get_backend("bubblewrap")
    assert str(caught.value) == (
        "sandbox backend 'bubblewrap' needs bwrap (Debian/Ubuntu: apt-get install bubblewrap); "
        "or use backend: local"
    )


def test_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(SandboxError, match=r"unknown sandbox backend 'docker'; known: bubblewrap, local"):
        get_backend("docker")
