"""Where an evaluation's wall time went: named phases timed in this process, for ``evaluate --profile``.

The stages time themselves (``with timing.phase("model load"):``); phases of the same name add up, and a
phase inside another is also counted in the outer one, so :func:`breakdown` takes the inner phases out of
their container (the flow call: what is left of it is Prefect's own work). Timing is
always on: it costs a clock read per phase.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_totals: dict[str, float] = {}


def reset() -> None:
    """Forget every phase (the start of one evaluation)."""
    with _lock:
        _totals.clear()


def add(name: str, seconds: float) -> None:
    """Count ``seconds`` towards the phase ``name``."""
    with _lock:
        _totals[name] = _totals.get(name, 0.0) + seconds


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as (part of) the phase ``name``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - start)


def timed(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator: every call of the function counts towards the phase ``name``."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with phase(name):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def totals() -> dict[str, float]:
    """Every phase timed so far, in the order first timed."""
    with _lock:
        return dict(_totals)


def process_age() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): the interpreter's start and imports."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started)


def breakdown(container: str, outside: tuple[str, ...]) -> list[tuple[str, float]]:
    """The phases as (name, seconds), in the order first timed, with ``container`` cut down to what is
    left of it once every other phase not named in ``outside`` (by prefix) is taken out: those ran
    inside it."""
    phases = totals()
    inside = sum(s for name, s in phases.items() if name != container and not name.startswith(outside))
    return [(name, max(0.0, s - inside) if name == container else s) for name, s in phases.items()]
