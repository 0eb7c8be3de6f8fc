"""Task runners and Dask shards: which runner a flow may use, and the contiguous example ranges that
shards of one dataset cover.
"""

from __future__ import annotations

from posteval.errors import InputError

TASK_RUNNERS = ("default", "dask")


def check_task_runner(name: str, dask_address: str | None) -> None:
    """InputError for an unknown task runner, or a Dask address without the Dask runner."""
    if name not in TASK_RUNNERS:
        raise InputError(f"task runner {name!r}: expected one of {', '.join(TASK_RUNNERS)}")
    if dask_address and name != "dask":
        raise InputError("a Dask address needs the dask task runner (--task-runner dask)")


def shard_range(n_examples: int, index: int, count: int) -> range:
    """The examples of shard ``index`` of ``count``: contiguous blocks whose sizes differ by one at most."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return range(n_examples * index // count, n_examples * (index + 1) // count)
