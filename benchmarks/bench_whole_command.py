"""posteval against lm-evaluation-harness as whole processes, from a cold start, on the same suite.

Run with ``python benchmarks/bench_whole_command.py`` (lm-eval from the ``bench`` extra:
``pip install -e ".[bench]"``). It builds the tiny GPT-2 and three sets (benchmarks/bench_data.py), writes
posteval's suite and the same tasks as lm-eval YAMLs, then times each tool as a separate process (wall
time of the process, start to exit), the two tools taken in turn, ``--repeats`` times per setting; it
prints the medians and posteval's time over lm-eval's. No timing is asserted anywhere.

Settings (lm-eval: the batch size 16 posteval's suite uses, one process for the three tasks, CPU):
- cold: a fresh POSTEVAL_HOME and PREFECT_HOME for posteval (a first run on a machine), a fresh
  HF_DATASETS_CACHE for lm-eval;
- warm homes: PREFECT_HOME (and lm-eval's datasets cache) kept from earlier runs, POSTEVAL_HOME fresh;
- server: a Prefect server already running (``posteval server start``, found through its state file as
  in the home of the user who started it), POSTEVAL_HOME otherwise fresh;
then, with the server still running: a cached re-run (the same checkpoint, suite and database: every
output stored), the same with the server named by PREFECT_API_URL instead (as a team's server: flow-run
heartbeats on), the read commands and ``report``; and a cached re-run without the server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data

PY = sys.executable


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "POSTEVAL_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return env | extra


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


class Bench:
    def __init__(self, root: Path, checkpoint: Path) -> None:
        self.root, self.checkpoint = root, checkpoint
        self.suite = bench_data.write_sets(root / "sets")
        self.count = 0

    def fresh(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{name}-{self.count}"
        path.mkdir(parents=True)
        return path

    def posteval(
        self, home: Path, prefect_home: Path, *extra: str, api: str | None = None, local: Path | None = None
    ) -> float:
        """One `posteval evaluate`. ``api``: a configured server (PREFECT_API_URL, as a team's); ``local``:
        the state file of a server `posteval server start` left running, put in ``home`` as it is in the
        home of the user who started it (the run finds it there, as every later run does)."""
        env = _env(POSTEVAL_HOME=str(home), PREFECT_HOME=str(prefect_home))
        if api:
            env["PREFECT_API_URL"] = api
        if local is not None:
            shutil.copy(local, home / local.name)
        args = [
            PY,
            "-m",
            "posteval.cli",
            "evaluate",
            str(self.checkpoint),
            "--suite",
            str(self.suite),
            *extra,
        ]
        return _timed(args, env, self.root)

    def lm_eval(self, datasets_cache: Path) -> float:
        args = [
            PY,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={self.checkpoint},dtype=float32",
        ]
        args += [
            "--tasks",
            ",".join(bench_data.TASKS),
            "--include_path",
            str(self.suite.parent / "lm_eval_tasks"),
        ]
        args += ["--batch_size", "16", "--device", "cpu"]
        env = _env(HF_DATASETS_CACHE=str(datasets_cache), HF_HOME=str(datasets_cache / "hf"))
        return _timed(args, env, self.root)


def _in_turn(repeats: int, sides: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Medians of ``repeats`` runs of each side, the sides taken in turn."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            times[name].append(run())
    for name, values in times.items():
        print(f"  {name}: {', '.join(f'{v:.2f}' for v in values)} s", flush=True)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    checkpoint = bench_data.checkpoint()
    root = Path(tempfile.mkdtemp(prefix="posteval-bench-whole-"))
    bench = Bench(root, checkpoint)
    figures: dict[str, float] = {}
    try:
        kept_prefect, kept_datasets = bench.fresh("prefect-kept"), bench.fresh("datasets-kept")
        bench.posteval(bench.fresh("pe"), kept_prefect)  # fill the kept homes once, untimed
        bench.lm_eval(kept_datasets)
        print(f"cold: fresh homes for both ({args.repeats} runs each, in turn)", flush=True)
        cold = _in_turn(
            args.repeats,
            {
                "posteval": lambda: bench.posteval(bench.fresh("pe"), bench.fresh("prefect")),
                "lm-eval": lambda: bench.lm_eval(bench.fresh("datasets")),
            },
        )
        print("warm homes: PREFECT_HOME and the datasets cache kept, POSTEVAL_HOME fresh", flush=True)
        warm = _in_turn(
            args.repeats,
            {
                "posteval": lambda: bench.posteval(bench.fresh("pe"), kept_prefect),
                "lm-eval": lambda: bench.lm_eval(kept_datasets),
            },
        )
        server_home = bench.fresh("server")
        server_env = _env(POSTEVAL_HOME=str(server_home), PREFECT_HOME=str(kept_prefect))
        started = subprocess.run(
            [PY, "-m", "posteval.cli", "server", "start"], env=server_env, capture_output=True, text=True
        )
        state = server_home / "prefect-server.json"
        api = json.loads(state.read_text())["url"]
        print(f"server: a Prefect server already running ({started.stdout.strip()})", flush=True)
        try:
            cached_home = bench.fresh("pe")
            served = _in_turn(
                args.repeats,
                {
                    "posteval": lambda: bench.posteval(bench.fresh("pe"), kept_prefect, local=state),
                    "lm-eval": lambda: bench.lm_eval(kept_datasets),
                },
            )
            first_served = bench.posteval(cached_home, kept_prefect, local=state)
            print(
                "cached re-run (every output stored), the read commands and report, server running",
                flush=True,
            )
            cached = _in_turn(
                args.repeats, {"posteval": lambda: bench.posteval(cached_home, kept_prefect, local=state)}
            )
            print("cached re-run against the same server named by PREFECT_API_URL (as a team's)", flush=True)
            cached_api = _in_turn(
                args.repeats, {"posteval": lambda: bench.posteval(cached_home, kept_prefect, api=api)}
            )
            env = _env(POSTEVAL_HOME=str(cached_home), PREFECT_HOME=str(kept_prefect))
            listed = subprocess.run(
                [PY, "-m", "posteval.cli", "runs", "list", "--format", "json"],
                env=env,
                capture_output=True,
                text=True,
            )
            runs = [row["run_id"] for row in json.loads(listed.stdout)]
            reads = {
                "runs list": ["runs", "list"],
                "runs show": ["runs", "show", runs[0]],
                "history": ["history", "accuracy", "--model", checkpoint.name],
                "compare": ["compare", runs[-1], runs[0]],
                "report": ["report", runs[0], "--out", str(root / "report.html")],
            }
            read_times = _in_turn(
                args.repeats,
                {
                    name: (lambda a=a: _timed([PY, "-m", "posteval.cli", *a], env, root))
                    for name, a in reads.items()
                },
            )
        finally:
            subprocess.run([PY, "-m", "posteval.cli", "server", "stop"], env=server_env, capture_output=True)
        print("cached re-run without a server (a temporary one, PREFECT_HOME kept)", flush=True)
        cached_cold = _in_turn(args.repeats, {"posteval": lambda: bench.posteval(cached_home, kept_prefect)})
        figures = {
            "cold_posteval_s": cold["posteval"],
            "cold_lm_eval_s": cold["lm-eval"],
            "warm_posteval_s": warm["posteval"],
            "warm_lm_eval_s": warm["lm-eval"],
            "server_posteval_s": served["posteval"],
            "server_lm_eval_s": served["lm-eval"],
            "first_run_with_server_s": first_served,
            "cached_rerun_server_s": cached["posteval"],
            "cached_rerun_configured_api_s": cached_api["posteval"],
            "cached_rerun_no_server_s": cached_cold["posteval"],
            **{f"{name.replace(' ', '_')}_s": value for name, value in read_times.items()},
        }
        print("\nposteval / lm-eval wall time (medians)")
        for setting in ("cold", "warm", "server"):
            p, lm = figures[f"{setting}_posteval_s"], figures[f"{setting}_lm_eval_s"]
            print(f"  {setting:<7} posteval {p:6.2f} s   lm-eval {lm:6.2f} s   ratio {p / lm:.2f}")
        print(f"cached re-run, server running: {cached['posteval']:.2f} s")
        print(f"cached re-run, the server as PREFECT_API_URL: {cached_api['posteval']:.2f} s")
        ratio = cached_cold["posteval"] / cold["posteval"]
        print(
            f"cached re-run, no server: {cached_cold['posteval']:.2f} s ({ratio:.2f} of the cold first run)"
        )
        for name, value in read_times.items():
            print(f"{name}: {value:.2f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
