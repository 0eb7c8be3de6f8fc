"""Hostile programs (issue 20, point 5): each is recorded as not passed (or capped), and the host is
unharmed, on every backend."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.sandbox_helpers import LIMITS, assert_host_unharmed, backends, judge

pytestmark = pytest.mark.parametrize("backend", backends())

CALL_F = "def check(candidate):\n    assert candidate() == 1\n"


def test_an_infinite_loop_times_out(backend: str) -> None:
    execution = judge(backend, "def f():\n    while True:\n        pass\n", CALL_F, "f")
    assert execution.status == "timeout"
    assert_host_unharmed()


def test_a_fork_bomb_is_bounded_and_killed(backend: str) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    execution = judge(backend, bomb + "def f():\n    return 1\n", CALL_F, "f")
    assert execution.status == "timeout"
    assert_host_unharmed()


def test_a_memory_hog_is_killed_for_memory(backend: str) -> None:
    hog = "def f():\n    blocks = []\n    while True:\n        blocks.append(bytearray(64 * 1024 * 1024))\n"
    execution = judge(backend, hog, CALL_F, "f")
    assert (execution.status, execution.error) == ("memory", "MemoryError")
    assert_host_unharmed()


def test_a_write_outside_its_folder_does_not_land(backend: str, tmp_path: Path) -> None:
    target = tmp_path / "planted.txt"
    code = f"def f():\n    open({str(target)!r}, 'w').write('pwned')\n    return 1\n"
    execution = judge(backend, code, CALL_F, "f")
    assert execution.status == "failed"
    assert execution.error in ("PermissionError", "FileNotFoundError", "OSError")
    assert not target.exists()
    assert_host_unharmed()


def test_a_secret_in_the_parents_environment_is_not_visible(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-posteval-test-9f8e7d6c"
    monkeypatch.setenv("POSTEVAL_TEST_API_KEY", secret)
    code = (
        "import os, glob\n"
        "def f():\n"
        "    found = [os.environ.get('POSTEVAL_TEST_API_KEY', '')]\n"
        "    for path in glob.glob('/proc/*/environ'):\n"
        "        try:\n"
        "            found.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "        except OSError:\n"
        "            pass\n"
        "    print(found)\n"
        "    return 1 if any('sk-posteval' in text for text in found) else 0\n"
    )
    execution = judge(backend, code, CALL_F, "f")
    assert (execution.status, execution.error) == ("failed", "AssertionError")
    assert secret not in execution.output
    assert_host_unharmed()


def test_a_socket_to_a_local_listener_never_connects(backend: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (
            "import socket\n"
            "def f():\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hello')\n"
            "    return 1\n"
        )
        execution = judge(backend, code, CALL_F, "f")
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert execution.status == "failed"
    assert execution.error in ("ConnectionRefusedError", "OSError", "TimeoutError")
    assert_host_unharmed()


def test_files_in_the_parents_working_directory_survive(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    code = (
        "import os, shutil\n"
        "def f():\n"
        "    for path in ('keep.txt', " + repr(str(victim)) + "):\n"
        "        try:\n"
        "            os.remove(path)\n"
        "        except OSError:\n"
        "            pass\n"
        f"    shutil.rmtree({str(tmp_path)!r}, ignore_errors=True)\n"
        "    return 1\n"
    )
    judge(backend, code, CALL_F, "f")
    assert victim.read_text() == "precious"
    assert_host_unharmed()


def test_printing_100_mb_is_capped(backend: str) -> None:
    code = "import sys\ndef f():\n    sys.stdout.write('x' * 100_000_000)\n    return 1\n"
    execution = judge(backend, code, CALL_F, "f")
    assert execution.status == "passed"  # printing is allowed; only what is kept is capped
    kept = execution.output.split("\n... (")[0]
    assert kept == "x" * (LIMITS.output_kb * 1024)
    assert execution.output.endswith("(100000000 bytes of output in all)")
    assert_host_unharmed()


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit(0)"])
def test_exiting_before_the_tests_run_is_not_a_pass(backend: str, exit_call: str) -> None:
    code = f"import os, sys\ndef f():\n    return 1\n{exit_call}\n"
    execution = judge(backend, code, CALL_F, "f")
    assert execution.status == "failed"
    assert execution.error in ("SystemExit", "CandidateExited")
    assert_host_unharmed()


def test_exiting_inside_the_tested_function_is_not_a_pass(backend: str) -> None:
    execution = judge(backend, "import os\ndef f():\n    os._exit(0)\n", CALL_F, "f")
    assert (execution.status, execution.error) == ("failed", "CandidateExited")
    assert_host_unharmed()
