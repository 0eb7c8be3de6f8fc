"""Shared by the sandbox tests: the backends to test, running one program as the scoring stage does, and
what "the host is unharmed" means (no process of a sandbox user left, the host can still start one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from posteval.evaluators import EvalInputs, resolve_metric
from posteval.sandbox import Execution, Limits, Program, get_backend, run_all
from posteval.sandbox.pool import try_lock
from posteval.settings import get_settings

LIMITS = Limits(timeout_s=8.0, cpu_s=4, memory_mb=512, processes=16, output_kb=16)


def backends() -> list[object]:
    """Both backends; bubblewrap fails (never skips) under CI when bwrap is missing (.ci/run installs it)."""
    bwrap = shutil.which("bwrap") is not None or os.environ.get("CI") == "true"
    return ["local", pytest.param("bubblewrap", marks=pytest.mark.skipif(not bwrap, reason="bwrap missing"))]


def sandbox_processes() -> list[int]:
    """Pids of processes running as a sandbox user (slot uid) whose slot no process holds now (slots held
    by another posteval process on this machine, a benchmark say, are theirs)."""
    first = get_settings().sandbox_uid
    free = set()
    for slot in range(64):
        fd = try_lock(slot)
        if fd is not None:
            free.add(first + slot)
            os.close(fd)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
        uids = [int(part) for part in uid_line.split()[1:]]
        if any(uid in free for uid in uids):
            found.append(int(entry.name))
    return found


def assert_host_unharmed() -> None:
    """No sandbox process survives its run, and the host can still start a process."""
    assert sandbox_processes() == []
    assert subprocess.run(["true"], check=False).returncode == 0


def judge(backend: str, code: str, test: str, entry_point: str | None = None) -> Execution:
    """Run one program as the scoring stage does, and check its outcome is recorded as the metric's."""
    execution = run_all(get_backend(backend), [Program(code, test, entry_point)], LIMITS, workers=1)[0]
    result = resolve_metric("pass_rate").compute(
        EvalInputs(predictions=[""], executions=[[execution.as_dict()]])
    )
    assert result.n == 1 and result.example_details is not None
    assert result.example_details[0]["samples"][0]["status"] == execution.status
    assert result.value == (1.0 if execution.passed else 0.0)
    return execution
