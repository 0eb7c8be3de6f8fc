"""Ctrl-C and SIGTERM stop an evaluation within seconds, say so in one line, and leave no child behind.

Two pieces, installed by the CLI around an evaluation:
- SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so it takes Ctrl-C's path: the flow marks the
  run failed ("interrupted") and the CLI prints one line and exits 143 (130 for Ctrl-C).
- The temporary Prefect API server (posteval.cli.prefect_server) is started in its own session, so the
  terminal's Ctrl-C reaches only posteval (the server stays up while posteval records the interrupt, then
  is stopped at exit instead of leaving posteval retrying a dead server for a minute), and on Linux it is
  told to die with its parent (:func:`die_with_parent`), so a SIGKILLed posteval leaves no orphan server.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


@contextmanager
def graceful_signals() -> Iterator[None]:
    """SIGTERM raises Terminated while the block runs (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal number (143 for SIGTERM, 130 for Ctrl-C)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
