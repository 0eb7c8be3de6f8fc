#!/usr/bin/env bash
# Reruns every benchmark behind the README's performance table and writes each one's output to
# benchmarks/results/ (committed beside the scripts). Run from the repository root with the project's venv:
#   PYTHON=.venv/bin/python benchmarks/run_all.sh
set -euo pipefail
PY=${PYTHON:-python}
out=benchmarks/results
mkdir -p "$out"
# Each file starts with when it was taken and how loaded the machine was (best-of figures still move).
stamp() { echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"; }
{ stamp; "$PY" benchmarks/bench_bootstrap.py; } | tee "$out/bench_bootstrap.txt"
{ stamp; "$PY" benchmarks/bench_runner.py --out "$out/bench_runner.json"; } | tee "$out/bench_runner.txt"
{ stamp; "$PY" benchmarks/bench_runner.py --no-stop --out "$out/bench_runner_no_stop.json"; } | tee "$out/bench_runner_no_stop.txt"
{ stamp; "$PY" benchmarks/bench_history.py ${POSTEVAL_BENCH_POSTGRES_URL:+--postgres-url "$POSTEVAL_BENCH_POSTGRES_URL"} \
  --out "$out/bench_history.json"; } | tee "$out/bench_history.txt"
{ stamp; "$PY" benchmarks/bench_compute.py --repeats 5 --out "$out/bench_compute.json"; } | tee "$out/bench_compute.txt"
{ stamp; "$PY" benchmarks/bench_whole_command.py --out "$out/bench_whole_command.json"; } | tee "$out/bench_whole_command.txt"
{ stamp; PYTHON="$PY" benchmarks/profile_commands.sh; } | tee "$out/profile_commands.txt"
{ stamp; "$PY" benchmarks/bench_sandbox.py; } | tee "$out/bench_sandbox.txt"
