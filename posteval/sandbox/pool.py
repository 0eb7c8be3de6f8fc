"""Many programs at once, at most ``workers`` running at a time, each worker on its own slot (user id).

A slot is claimed host-wide (an exclusive ``flock`` on a file in a folder only posteval's user can
write), so two posteval processes on one machine (two workers, tests beside a benchmark) never run
programs as the same user: the process limit and the clean-up after each program (every process of the
slot's user is killed) then only ever reach that program's own processes.
"""

from __future__ import annotations

import fcntl
import os
import queue
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from posteval.errors import SandboxError
from posteval.sandbox.base import Execution, Limits, Program, Sandbox

MAX_SLOTS = 4096


def slot_lock(slot: int) -> Path:
    """The file whose exclusive lock holds ``slot`` on this machine."""
    return Path(tempfile.gettempdir()) / f"posteval-sandbox-slots-{os.geteuid()}" / str(slot)


def try_lock(slot: int) -> int | None:
    """An open descriptor holding ``slot``'s lock, or None if another process holds it."""
    path = slot_lock(slot)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def claimed_slots(count: int) -> Iterator[list[int]]:
    """``count`` slots no other process on this machine holds, held until the block ends."""
    held: dict[int, int] = {}
    try:
        for slot in range(MAX_SLOTS):
            if len(held) == count:
                break
            fd = try_lock(slot)
            if fd is not None:
                held[slot] = fd
        if len(held) < count:
            raise SandboxError(f"no {count} free sandbox slots among {MAX_SLOTS} on this machine")
        yield sorted(held)
    finally:
        for fd in held.values():
            os.close(fd)


def run_all(
    sandbox: Sandbox,
    programs: Sequence[Program],
    limits: Limits,
    *,
    workers: int,
    on_done: Callable[[int], None] | None = None,
) -> list[Execution]:
    """Every program's execution, in input order; ``on_done(i)`` after each one finishes.

    The threads only wait on child processes, so a thread per worker is enough; a slot is taken for the
    duration of one program, so no two programs ever run as the same user at the same time.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    with claimed_slots(workers) as slots_held:
        slots: queue.Queue[int] = queue.Queue()
        for slot in slots_held:
            slots.put(slot)

        def one(index: int) -> Execution:
            slot = slots.get()
            try:
                return sandbox.run(programs[index], limits, slot=slot)
            finally:
                slots.put(slot)
                if on_done is not None:
                    on_done(index)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            return list(pool.map(one, range(len(programs))))
