"""Times the code sandbox: N trivial programs (a function and one HumanEval-style check) through
``posteval.sandbox.run_all`` with each backend and worker count: wall-clock seconds, and CPU time per
program (which another job's load on the machine changes far less). Prints figures; asserts nothing.

    python benchmarks/bench_sandbox.py [--programs 1000 --workers 2 4 --backends local bubblewrap]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time

from posteval.sandbox import Limits, Program, get_backend, run_all

PROGRAM = Program(
    code="def add(a, b):\n    return a + b\n",
    test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
    entry_point="add",
)


def _cpu_s() -> float:
    """CPU seconds used by this process and its waited-for children (the wrappers and harnesses; a
    candidate process ends with its namespace and is not counted, so this is a lower bound)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--backends", nargs="+", default=["local", "bubblewrap"])
    args = parser.parse_args()
    print(f"# {args.programs} trivial programs, {os.cpu_count()} CPUs, running as uid {os.geteuid()}")
    print(
        f"{'backend':<12} {'workers':>7} {'seconds':>8} {'programs/s':>10} {'CPU ms/program':>14}  outcomes"
    )
    for name in args.backends:
        if name == "bubblewrap" and shutil.which("bwrap") is None:
            print(f"{name:<12} (bwrap not installed)")
            continue
        sandbox = get_backend(name)
        for workers in args.workers:
            cpu_before = _cpu_s()
            started = time.perf_counter()
            results = run_all(sandbox, [PROGRAM] * args.programs, Limits(), workers=workers)
            seconds = time.perf_counter() - started
            cpu_ms = 1000 * (_cpu_s() - cpu_before) / args.programs
            outcomes = {s: sum(r.status == s for r in results) for s in {r.status for r in results}}
            rate = args.programs / seconds
            print(f"{name:<12} {workers:>7} {seconds:>8.1f} {rate:>10.1f} {cpu_ms:>14.1f}  {outcomes}")
        notes = sandbox.notes()
        if notes:
            print(f"  {name} notes: {'; '.join(notes)}")


if __name__ == "__main__":
    main()
