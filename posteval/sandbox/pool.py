"""Many programs at once, at most ``workers`` running at a time, each worker on its own slot (user id)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from posteval.sandbox.base import Execution, Limits, Program, Sandbox


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
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(workers):
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
