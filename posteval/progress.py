"""A progress hook the core reports to; the CLI installs a rich progress bar, library use stays silent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    """Receives progress of long work: one named job of ``total`` units at a time."""

    def start(self, description: str, total: int) -> object: ...

    def advance(self, job: object, amount: int) -> None: ...

    def finish(self, job: object) -> None: ...


class _Silent:
    def start(self, description: str, total: int) -> object:
        return None

    def advance(self, job: object, amount: int) -> None:
        return None

    def finish(self, job: object) -> None:
        return None


_sink: ProgressSink = _Silent()


def set_sink(sink: ProgressSink | None) -> None:
    """Install ``sink`` (None restores silence)."""
    global _sink
    _sink = sink or _Silent()


@contextmanager
def job(description: str, total: int) -> Iterator[object]:
    """Report a job of ``total`` units to the installed sink; advance it with :func:`advance`."""
    handle = _sink.start(description, total)
    try:
        yield handle
    finally:
        _sink.finish(handle)


def advance(handle: object, amount: int) -> None:
    """Advance ``handle`` by ``amount`` units."""
    _sink.advance(handle, amount)
