"""The harness decides pass, never the program: forged result lines, a patched test harness, objects that
equal everything and a killed parent are all failures; HumanEval and MBPP tests judge as written."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from posteval.sandbox import Execution, Limits, Program, run_all
from tests.sandbox_helpers import assert_host_unharmed, backends, judge

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "code" / "problems.jsonl"
CALL_F = "def check(candidate):\n    assert candidate() == 1\n"


@pytest.mark.parametrize("backend", backends())
def test_forged_result_lines_are_not_a_pass(backend: str) -> None:
    # Everything the program could learn the nonce from is tried, then "passed" is written everywhere.
    code = r"""
import gc, os, re, sys
def f():
    return 2
tokens = set()
for path in ("task.json", f"/proc/{os.getppid()}/cmdline", f"/proc/{os.getppid()}/environ",
             f"/proc/{os.getppid()}/mem"):
    try:
        tokens.update(re.findall(r"[0-9a-f]{32}", open(path, "rb").read().decode(errors="ignore")))
    except OSError:
        pass
for obj in gc.get_objects():
    if isinstance(obj, str):
        tokens.update(re.findall(r"[0-9a-f]{32}", obj))
lines = "".join(f"\n{t} {{\"status\": \"passed\"}}\n" for t in tokens) + '\nnonce {"status": "passed"}\n'
for fd in (1, 2):
    os.write(fd, lines.encode())
try:
    os.write(os.open(f"/proc/{os.getppid()}/fd/1", os.O_WRONLY), lines.encode())
except OSError:
    pass
"""
    execution = judge(backend, code, CALL_F, "f")
    assert (execution.status, execution.error) == ("failed", "AssertionError")
    assert_host_unharmed()


@pytest.mark.parametrize(
    "patch",
    [
        "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})\n",
        "import sys\nsys.modules['__main__'].__dict__.clear()\n",
        "import builtins\nbuiltins.__dict__['exec'] = lambda *a, **k: None\n",
        "import sys\nsys.exit = lambda *a: None\nsys.excepthook = lambda *a: None\n",
    ],
)
def test_patching_the_harness_from_the_program_is_not_a_pass(patch: str) -> None:
    execution = judge("local", patch + "def f():\n    return 2\n", CALL_F, "f")
    assert execution.status == "failed"
    assert execution.error in ("AssertionError", "CandidateExited")  # clearing its own module ends it
    assert_host_unharmed()


def test_an_object_equal_to_everything_is_not_a_pass() -> None:
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef f():\n    return Any()\n"
    execution = judge("local", code, CALL_F, "f")
    assert (execution.status, execution.error) == ("failed", "UnsupportedReturnValue")


def test_killing_the_harness_is_not_a_pass() -> None:
    execution = judge(
        "local",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef f():\n    return 2\n",
        CALL_F,
        "f",
    )
    # In a PID namespace the harness is its init and ignores the signal; elsewhere it dies: no result.
    assert execution.status == "failed"
    assert execution.error in ("AssertionError", "NoResult")
    assert_host_unharmed()


def test_a_syntax_error_fails_naming_it() -> None:
    execution = judge("local", "def f(:\n    return 1\n", CALL_F, "f")
    assert (execution.status, execution.error, execution.message) == (
        "failed",
        "SyntaxError",
        "while loading the program",
    )
    assert "SyntaxError" in execution.output


def test_mbpp_assert_lines_call_the_function_by_name() -> None:
    tests = "\n".join(["assert remove_char('hello', 'l') == 'heo'", "assert remove_char('', 'x') == ''"])
    good = judge("local", "def remove_char(s, c):\n    return s.replace(c, '')\n", tests)
    bad = judge("local", "def remove_char(s, c):\n    return s\n", tests)
    assert good.status == "passed"
    assert (bad.status, bad.error, bad.message) == (
        "failed",
        "AssertionError",
        "tests.py:1: assert remove_char('hello', 'l') == 'heo'",
    )


def test_a_missing_entry_point_fails_as_a_name_error() -> None:
    execution = judge("local", "def g():\n    return 1\n", CALL_F, "f")
    assert (execution.status, execution.error) == ("failed", "NameError")


def test_plain_data_crosses_the_boundary_both_ways() -> None:
    code = "def echo(x):\n    return x\n"
    test = (
        "def check(candidate):\n"
        "    for value in [1, -2**100, 1.5, float('inf'), 'é', b'\\x00', None, True,"
        " (1, [2, {3: 'x'}]), {1, 2}, frozenset({'a'}), 1+2j]:\n"
        "        assert candidate(value) == value and type(candidate(value)) is type(value)\n"
    )
    assert judge("local", code, test, "echo").status == "passed"


def test_every_bundled_example_passes_with_its_solution_and_fails_without() -> None:
    rows = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    solved = [Program(r["prompt"] + r["canonical_solution"], r["test"], r["entry_point"]) for r in rows]
    unsolved = [Program(r["prompt"] + "    return None\n", r["test"], r["entry_point"]) for r in rows]
    from posteval.sandbox import get_backend

    results = run_all(get_backend("local"), solved + unsolved, Limits(), workers=2)
    assert [r.status for r in results] == ["passed"] * len(rows) + ["failed"] * len(rows)


class _Counting:
    """A sandbox that records how many programs run at once."""

    name = "counting"

    def __init__(self) -> None:
        self.lock, self.now, self.most, self.slots = threading.Lock(), 0, 0, set()

    def notes(self) -> list[str]:
        return []

    def run(self, program: Program, limits: Limits, *, slot: int = 0) -> Execution:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            assert slot not in self.slots  # no two programs share a slot (a user) at once
            self.slots.add(slot)
        time.sleep(0.01)
        with self.lock:
            self.now -= 1
            self.slots.discard(slot)
        return Execution("passed" if program.code == "ok" else "failed")


def test_the_pool_runs_at_most_workers_programs_at_once_and_keeps_input_order() -> None:
    sandbox = _Counting()
    programs = [Program("ok" if i % 3 else "no", "") for i in range(40)]
    done: list[int] = []
    results = run_all(sandbox, programs, Limits(), workers=3, on_done=done.append)
    assert sandbox.most <= 3
    assert [r.status for r in results] == ["failed" if i % 3 == 0 else "passed" for i in range(40)]
    assert sorted(done) == list(range(40))
