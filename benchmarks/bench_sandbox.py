"""Times the code sandbox: N trivial programs (a function and one HumanEval-style check) through
``posteval.sandbox.run_all`` with each backend and worker count. Prints figures; asserts nothing.

    python benchmarks/bench_sandbox.py [--programs 1000 --workers 2 4 --backends local bubblewrap]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from posteval.sandbox import Limits, Program, get_backend, run_all

PROGRAM = Program(
    code="def add(a, b):\n    return a + b\n",
    test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
    entry_point="add",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--backends", nargs="+", default=["local", "bubblewrap"])
    args = parser.parse_args()
    print(f"# {args.programs} trivial programs, {os.cpu_count()} CPUs, running as uid {os.geteuid()}")
    print(f"{'backend':<12} {'workers':>7} {'seconds':>8} {'programs/s':>10}  outcomes")
    for name in args.backends:
        if name == "bubblewrap" and shutil.which("bwrap") is None:
            print(f"{name:<12} (bwrap not installed)")
            continue
        sandbox = get_backend(name)
        for workers in args.workers:
            started = time.perf_counter()
            results = run_all(sandbox, [PROGRAM] * args.programs, Limits(), workers=workers)
            seconds = time.perf_counter() - started
            outcomes = {s: sum(r.status == s for r in results) for s in {r.status for r in results}}
            print(f"{name:<12} {workers:>7} {seconds:>8.1f} {args.programs / seconds:>10.1f}  {outcomes}")
        notes = sandbox.notes()
        if notes:
            print(f"  {name} notes: {'; '.join(notes)}")


if __name__ == "__main__":
    main()
