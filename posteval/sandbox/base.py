"""The sandbox interface: what a program is, the limits it runs under, and what comes back.

A backend (registered by name) runs one :class:`Program` and returns an :class:`Execution`; it never raises
for anything the program does. Errors it can raise: :class:`~posteval.errors.SandboxError` when the
backend cannot run at all on this machine (bwrap missing, not allowed to switch user), named in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

Status = Literal["passed", "failed", "timeout", "memory"]
STATUSES: tuple[Status, ...] = ("passed", "failed", "timeout", "memory")


@dataclass(frozen=True)
class Limits:
    """What one program may use. Times in seconds, sizes in MiB; ``processes`` bounds a fork bomb."""

    timeout_s: float = 10.0  # wall clock, the whole process group killed when it passes
    cpu_s: int = 10
    memory_mb: int = 1024  # address space (RLIMIT_AS) of each process
    file_mb: int = 16  # largest file it may write (RLIMIT_FSIZE)
    open_files: int = 64
    processes: int = 32  # per sandbox user (RLIMIT_NPROC), and inside its own PID namespace
    output_kb: int = 64  # stdout kept by the host; the rest is read and dropped


@dataclass(frozen=True)
class Program:
    """A candidate program and the tests that judge it (HumanEval's ``check(candidate)`` or bare asserts)."""

    code: str
    test: str
    entry_point: str | None = None


@dataclass(frozen=True)
class Execution:
    """What happened to one program.

    ``status``: passed (every test ran and held), failed (``error`` names the exception type), timeout
    (wall clock or CPU time), memory (MemoryError or killed at the memory limit). ``output`` is the
    failing test's message and the program's output, capped. ``notes`` say which protections were missing
    (no network namespace here, ...), so a result never pretends to isolation it did not have.
    """

    status: Status
    error: str | None = None
    message: str = ""
    output: str = ""
    duration_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        """Whether the program passed its tests."""
        return self.status == "passed"

    def as_dict(self) -> dict[str, object]:
        """Plain data, as stored per example."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


class Sandbox(Protocol):
    """A way to run untrusted programs."""

    name: str

    def notes(self) -> list[str]:
        """Protections this backend lacks on this machine (empty when it has them all)."""
        ...

    def run(self, program: Program, limits: Limits, *, slot: int = 0) -> Execution:
        """Run ``program`` under ``limits``; ``slot`` (0..workers-1) picks the user it runs as."""
        ...


_BACKENDS: dict[str, Callable[[], Sandbox]] = {}


def register_backend(name: str, factory: Callable[[], Sandbox]) -> None:
    """Make ``factory`` the backend called ``name``."""
    _BACKENDS[name] = factory


def backend_names() -> list[str]:
    """Every registered backend's name."""
    return sorted(_BACKENDS)


def get_backend(name: str) -> Sandbox:
    """The backend ``name``; SandboxError if it is unknown or cannot run here."""
    from posteval.errors import SandboxError

    if name not in _BACKENDS:
        raise SandboxError(f"unknown sandbox backend {name!r}; known: {', '.join(backend_names())}")
    return _BACKENDS[name]()
