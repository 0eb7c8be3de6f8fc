"""Running the harness as a child process: a fresh folder, a clean environment, no stdin, capped output,
the wall-clock limit, and reading the harness's nonce-tagged result line. Backends supply the command
that wraps the interpreter (unshare, bwrap) and whether it switches user.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from posteval.sandbox.base import STATUSES, Execution, Limits, Program, Status
from posteval.settings import get_settings

HARNESS = Path(__file__).with_name("harness_main.py")
TAIL_BYTES = 64 * 1024  # the end of the harness's stdout, where its result line is


def sandbox_python() -> str:
    """The interpreter programs run under (POSTEVAL_SANDBOX_PYTHON, else /usr/bin/python3, else ours)."""
    configured = get_settings().sandbox_python
    if configured:
        return configured
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


@dataclass(frozen=True)
class Launch:
    """How a backend starts the interpreter: the wrapping command (``{dir}`` is the program's folder),
    the folder as the program sees it, and the user to run as (None: the calling user)."""

    prefix: list[str]
    workdir_inside: str | None = None
    user: int | None = None  # switched to by Popen before exec (bubblewrap); unshare switches itself
    owner: int | None = None  # who owns the fresh folder
    # The wrapper exits only after the program's PID namespace is gone (unshare waits for its init, whose
    # exit waits for every process in it), so a program that ended normally left nothing behind.
    waits_for_namespace: bool = False


class _Reader(threading.Thread):
    """Reads a pipe to its end, keeping the first ``head`` bytes and the last TAIL_BYTES."""

    def __init__(self, stream: object, head: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.head_limit = stream, head
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_size = 0
        self.total = 0

    def run(self) -> None:
        read = self.stream.read1  # type: ignore[attr-defined]
        while chunk := read(1 << 16):
            self.total += len(chunk)
            if len(self.head) < self.head_limit:
                self.head += chunk[: self.head_limit - len(self.head)]
            self.tail.append(chunk)
            self.tail_size += len(chunk)
            while self.tail_size - len(self.tail[0]) >= TAIL_BYTES:
                self.tail_size -= len(self.tail.popleft())

    def tail_text(self) -> str:
        return b"".join(self.tail)[-TAIL_BYTES:].decode("utf-8", "replace")


def _prepare(program: Program, limits: Limits, owner: int | None, nonce: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="posteval-sandbox-"))
    shutil.copyfile(HARNESS, folder / "harness_main.py")
    task = {
        "code": program.code,
        "test": program.test,
        "entry_point": program.entry_point,
        "nonce": nonce,
        "capture": limits.output_kb * 1024,
    }
    (folder / "task.json").write_text(json.dumps(task), encoding="utf-8")
    if owner is not None:
        for path in (folder, folder / "harness_main.py", folder / "task.json"):
            os.chown(path, owner, owner)
    folder.chmod(0o700)
    return folder


def limit_arguments(limits: Limits) -> list[str]:
    """The rlimits the harness sets on itself before it forks the candidate (soft = hard, never raised)."""
    return [
        str(limits.cpu_s),
        str(limits.memory_mb * 1024 * 1024),
        str(limits.file_mb * 1024 * 1024),
        str(limits.open_files),
        str(limits.processes),
    ]


def execute(program: Program, limits: Limits, launch: Launch, notes: tuple[str, ...]) -> Execution:
    """Run ``program`` as the backend's ``launch`` says; never raises for what the program does."""
    nonce = secrets.token_hex(16)
    folder = _prepare(program, limits, launch.owner, nonce)
    inside = launch.workdir_inside or str(folder)
    command = [part.replace("{dir}", str(folder)) for part in launch.prefix]
    command += [sandbox_python(), "-I", "-S", f"{inside}/harness_main.py", *limit_arguments(limits)]
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            command,
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole at the limit
            user=launch.user,
            group=launch.user,
            extra_groups=[] if launch.user is not None else None,
        )
        reader = _Reader(process.stdout, limits.output_kb * 1024)
        reader.start()
        timed_out = False
        try:
            process.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(process.pid)
        process.wait()
        reader.join(timeout=5.0)
        duration = time.monotonic() - started
        execution = _outcome(reader, nonce, process.returncode, timed_out, limits, duration, notes)
        # Killed from outside, a namespace dies asynchronously; without one, a daemon may have left.
        if launch.owner is not None and (
            timed_out or execution.error == "NoResult" or not launch.waits_for_namespace
        ):
            reap(launch.owner)
        return execution
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def user_processes(uid: int) -> list[int]:
    """Pids of the processes whose real user is ``uid``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return pids


def reap(uid: int, *, patience_s: float = 10.0) -> None:
    """Kill every process of the slot's user until none is left: whatever left the process group (a new
    session, a daemon) is still that user's, and no other program runs as it while the slot is held."""
    deadline = time.monotonic() + patience_s
    while pids := user_processes(uid):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _outcome(
    reader: _Reader,
    nonce: str,
    returncode: int,
    timed_out: bool,
    limits: Limits,
    duration: float,
    notes: tuple[str, ...],
) -> Execution:
    """The harness's result line (the last line starting with the nonce), else what the exit says."""
    result = None
    for line in reversed(reader.tail_text().splitlines()):
        if line.startswith(nonce + " "):
            try:
                result = json.loads(line[len(nonce) + 1 :])
            except json.JSONDecodeError:
                result = None
            break
    if timed_out:
        return Execution(
            "timeout",
            "Timeout",
            f"killed after {limits.timeout_s:g} s of wall-clock time",
            _shown(result, reader),
            duration,
            notes,
        )
    if not isinstance(result, dict) or result.get("status") not in STATUSES:
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        return Execution(
            "failed",
            "NoResult",
            f"the harness reported no result ({how})",
            _shown(None, reader),
            duration,
            notes,
        )
    status: Status = result["status"]
    error = result.get("error")
    return Execution(
        status,
        str(error) if error is not None else None,
        str(result.get("message", "")),
        _shown(result, reader),
        duration,
        notes,
    )


def _shown(result: dict[str, object] | None, reader: _Reader) -> str:
    """The program's captured output (from the harness), else the start of what the harness printed."""
    if isinstance(result, dict) and isinstance(result.get("output"), str):
        text = str(result["output"])
        total = result.get("output_bytes")
        if isinstance(total, int) and total > len(text.encode()):
            text += f"\n... ({total} bytes of output in all)"
        return text
    return reader.head.decode("utf-8", "replace")
