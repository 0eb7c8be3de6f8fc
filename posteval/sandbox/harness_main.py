"""The program that runs inside the sandbox: the candidate in one process, the tests in another.

Standard library only; the sandbox starts it as ``python -I -S harness_main.py`` in a fresh folder
holding ``task.json`` (solution code, test code, entry point, nonce). The candidate never runs in the
process that judges it:

1. The harness forks the candidate process first, before it has read anything, so the candidate's memory
   never holds the nonce; the harness then makes itself non-dumpable (no ptrace, no /proc/PID/mem or
   /proc/PID/fd for same-user processes), reads and deletes task.json and sends the code over a pipe.
2. The candidate process executes the code with stdin on /dev/null and stdout/stderr on a pipe the
   harness drains (at most CAPTURE bytes kept) and serves calls: a function name and arguments in, the
   return value or the exception's type out, in a plain-data encoding (never pickle).
3. The harness runs the tests against proxies of the candidate's functions and, only when every test has
   run, writes one line ``<nonce> <json>`` to its own stdout, which the candidate cannot reach. No line,
   or a line without the nonce, is never a pass: exit codes decide nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import threading
from typing import Any

CAPTURE = 4096  # bytes of the candidate's output kept for the report (task.json may say otherwise)
MAX_MESSAGE = 16 * 1024 * 1024


# Plain data across the pipe: tagged JSON, decoded without ever running or importing anything ---------------

_SEQUENCE_TAGS: dict[type, str] = {list: "l", tuple: "t", set: "s", frozenset: "z"}


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as tagged JSON; TypeError for anything but plain data."""
    if depth > 100:
        raise TypeError("nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, complex):
        return {"c": [repr(value.real), repr(value.imag)]}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    tag = _SEQUENCE_TAGS.get(type(value))
    if tag is not None:
        return {tag: [encode(item, depth + 1) for item in value]}
    if type(value) is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise TypeError(f"cannot pass a {type(value).__name__}")


def decode(data: Any, depth: int = 0) -> Any:
    """The value that :func:`encode` encoded; ValueError for anything else."""
    if depth > 100:
        raise ValueError("nested too deeply")
    if data is None or isinstance(data, (bool, str)):
        return data
    if not (isinstance(data, dict) and len(data) == 1):
        raise ValueError("not an encoded value")
    tag, body = next(iter(data.items()))
    if tag == "i" and isinstance(body, str) and len(body) < 5000:
        return int(body)
    if tag == "f" and isinstance(body, str):
        return float(body)
    if tag == "c" and isinstance(body, list) and len(body) == 2:
        return complex(float(body[0]), float(body[1]))
    if tag == "b" and isinstance(body, str):
        return bytes.fromhex(body)
    if tag in ("l", "t", "s", "z") and isinstance(body, list):
        items = [decode(item, depth + 1) for item in body]
        return {"l": list, "t": tuple, "s": set, "z": frozenset}[tag](items)
    if tag == "d" and isinstance(body, list):
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
    raise ValueError("not an encoded value")


def send(fd: int, message: Any) -> None:
    """One JSON message, length-prefixed."""
    data = json.dumps(message).encode()
    os.write(fd, len(data).to_bytes(8, "big"))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def receive(fd: int) -> Any:
    """One message, or None when the other side is gone (or sent more than MAX_MESSAGE)."""
    header = _read_exact(fd, 8)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_MESSAGE:
        return None
    body = _read_exact(fd, size)
    return None if body is None else json.loads(body)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# The candidate process ----------------------------------------------------------------------------------


def candidate(requests: int, replies: int, output: int) -> None:
    """Run the candidate's code, then answer calls until the harness closes the pipe. Never returns."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    keep = {0, 1, 2, requests, replies}
    for fd in range(3, 1024):
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdio
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    code = receive(requests)
    if not isinstance(code, str):
        os._exit(1)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        exec(compile(code, "solution.py", "exec"), namespace)
        loaded: Any = {
            "ok": sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("__"))
        }
    except BaseException as exc:
        import traceback

        traceback.print_exc()
        loaded = {"error": type(exc).__name__}
    sys.stdout.flush()
    send(replies, loaded)
    while True:
        request = receive(requests)
        if request is None:
            os._exit(0)
        try:
            fn = namespace[request["name"]]
            args = decode(request["args"])
            value = fn(*args)
        except BaseException as exc:
            result: Any = {"error": type(exc).__name__, "message": str(exc)[:500]}
        else:
            try:  # only plain data goes back: an object equal to everything never reaches the tests
                result = {"value": encode(value)}
            except (TypeError, RecursionError) as exc:
                result = {"error": "UnsupportedReturnValue", "message": str(exc)[:500]}
        sys.stdout.flush()
        sys.stderr.flush()
        send(replies, result)


# The harness process ------------------------------------------------------------------------------------


class CandidateError(Exception):
    """The candidate raised, or its process is gone; carries the exception type's name."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind


class Channel:
    """Calls into the candidate process."""

    def __init__(self, requests: int, replies: int, pid: int) -> None:
        self.requests, self.replies, self.pid = requests, replies, pid

    def ended(self) -> tuple[str, str]:
        """Why the candidate process is gone: an exit (sys.exit counts as a failure) or a signal."""
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            return "CandidateExited", "the program ended before answering"
        if os.WIFSIGNALED(status):
            signal = os.WTERMSIG(status)
            kind = {9: "Killed", 11: "MemoryError", 24: "CPUTimeExceeded"}.get(signal, "Signal")
            return kind, f"the program died of signal {signal} before answering"
        return "CandidateExited", f"the program exited with code {os.WEXITSTATUS(status)} before answering"

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        try:
            send(self.requests, {"name": name, "args": encode(args)})
        except TypeError as exc:
            raise CandidateError("UnsupportedArgument", str(exc)) from None
        except OSError:
            raise CandidateError("CandidateExited") from None
        reply = receive(self.replies)
        if not isinstance(reply, dict):
            raise CandidateError(*self.ended())
        if "error" in reply:
            raise CandidateError(str(reply["error"])[:100], str(reply.get("message", "")))
        try:
            return decode(reply.get("value"))
        except (ValueError, TypeError, OverflowError):
            raise CandidateError("UnsupportedReturnValue") from None


def proxy(channel: Channel, name: str) -> Any:
    def call(*args: Any) -> Any:
        return channel.call(name, args)

    call.__name__ = name
    return call


class Capture(threading.Thread):
    """Drains the candidate's output, keeping the first ``limit`` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.limit, self.kept, self.total = fd, limit, bytearray(), 0

    def run(self) -> None:
        while chunk := os.read(self.fd, 1 << 16):
            self.total += len(chunk)
            if len(self.kept) < self.limit:
                self.kept += chunk[: self.limit - len(self.kept)]


def _non_dumpable() -> None:
    """PR_SET_DUMPABLE 0: processes of the same user can no longer ptrace us or open /proc/PID/{mem,fd}."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)


def _failing_line(exc: BaseException, test: str) -> str:
    """``tests.py:LINE: the assert`` of the innermost test frame, and the assertion's message if any."""
    lineno, tb = 0, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "tests.py":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    lines = test.splitlines()
    text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    detail = f" ({exc})" if str(exc) else ""
    return f"tests.py:{lineno}: {text}{detail}"[:500]


def judge(task: dict[str, Any], channel: Channel) -> dict[str, Any]:
    """Load the candidate's code, run every test; the outcome as plain data."""
    send(channel.requests, task["code"])
    loaded = receive(channel.replies)
    if not isinstance(loaded, dict):
        kind, message = channel.ended()
        return {"status": "failed", "error": kind, "message": message + " (while loading)"}
    if "error" in loaded:
        return {
            "status": "failed",
            "error": str(loaded["error"])[:100],
            "message": "while loading the program",
        }
    names = [str(name) for name in loaded.get("ok", [])]
    namespace: dict[str, Any] = {"__name__": "__tests__", **{name: proxy(channel, name) for name in names}}
    test = task["test"]
    entry = task.get("entry_point")
    try:
        exec(compile(test, "tests.py", "exec"), namespace)
        if entry:
            if entry not in names:
                raise CandidateError("NameError", f"the program defines no {entry!r}")
            if callable(namespace.get("check")):
                namespace["check"](proxy(channel, entry))
    except CandidateError as exc:
        return {"status": "failed", "error": exc.kind, "message": str(exc)[:500]}
    except AssertionError as exc:
        return {"status": "failed", "error": "AssertionError", "message": _failing_line(exc, test)}
    except BaseException as exc:
        return {"status": "failed", "error": type(exc).__name__, "message": str(exc)[:500]}
    return {"status": "passed"}


def set_limits(arguments: list[str]) -> None:
    """cpu seconds, address space, file size, open files, processes, before any fork; the program cannot
    raise them (an unprivileged process never raises a hard limit)."""
    import resource

    names = (
        resource.RLIMIT_CPU,
        resource.RLIMIT_AS,
        resource.RLIMIT_FSIZE,
        resource.RLIMIT_NOFILE,
        resource.RLIMIT_NPROC,
    )
    for name, value in zip(names, arguments, strict=True):
        # CPU: SIGXCPU at the soft limit (reported as a timeout), SIGKILL a second later at the hard one.
        hard = int(value) + 1 if name == resource.RLIMIT_CPU else int(value)
        resource.setrlimit(name, (int(value), hard))


def main() -> None:
    set_limits(sys.argv[1:6])
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    output_r, output_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # before anything is read: the candidate's memory never holds the nonce
        candidate(requests_r, replies_w, output_w)
    for fd in (requests_r, replies_w, output_w):
        os.close(fd)
    _non_dumpable()
    with open("task.json", encoding="utf-8") as handle:
        task = json.load(handle)
    os.remove("task.json")
    capture = Capture(output_r, int(task.get("capture", CAPTURE)))
    capture.start()
    result = judge(task, Channel(requests_w, replies_r, pid))
    os.close(requests_w)
    capture.join(timeout=1.0)
    result["output"] = capture.kept.decode("utf-8", "replace")
    result["output_bytes"] = capture.total
    if result.get("error") == "MemoryError":
        result["status"] = "memory"
    elif result.get("error") == "CPUTimeExceeded":
        result["status"] = "timeout"
    sys.stdout.write("\n" + task["nonce"] + " " + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
