#!/usr/bin/env bash
# One cached re-run with --profile (where its time goes) and the read commands, each timed as a whole
# process with its user CPU time beside the wall time (on a shared machine the wall time is mostly waiting
# for a CPU). Run from the repository root after bench_whole_command.py has built the checkpoint:
#   PYTHON=.venv/bin/python benchmarks/profile_commands.sh > benchmarks/results/profile_commands.txt
set -euo pipefail
PY=${PYTHON:-python}
work=$(mktemp -d)
trap 'POSTEVAL_HOME=$work PREFECT_HOME=$work/prefect "$PY" -m posteval.cli server stop >/dev/null; rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 POSTEVAL_HOME=$work PREFECT_HOME=$work/prefect
unset PREFECT_API_URL POSTEVAL_DATABASE_URL
"$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_data, pathlib; bench_data.write_sets(pathlib.Path('$work/sets'))"
ckpt=$("$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_data; print(bench_data.checkpoint())")
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" -m posteval.cli server start
timed() { /usr/bin/time -f "posteval $*: %e s wall, %U s user CPU" "$PY" -m posteval.cli "$@" 2>&1 >/dev/null | tail -1; }
echo "# first run, local Prefect server running"
/usr/bin/time -f "whole process: %e s wall, %U s user CPU" "$PY" -m posteval.cli evaluate "$ckpt" --suite "$work/sets/suite.yaml" --profile 2>&1 | sed -n '/where the time/,$p'
echo "# cached re-run (every output stored), local Prefect server running"
/usr/bin/time -f "whole process: %e s wall, %U s user CPU" "$PY" -m posteval.cli evaluate "$ckpt" --suite "$work/sets/suite.yaml" --profile 2>&1 | sed -n '/where the time/,$p'
run=$("$PY" -m posteval.cli runs list --format json | "$PY" -c "import json, sys; print(json.load(sys.stdin)[0]['run_id'])")
echo "# read commands and report"
timed runs list
timed runs show "$run"
timed history accuracy --model "$(basename "$ckpt")"
timed compare "$run" "$run"
timed report "$run" --out "$work/report.html"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) load average $(cut -d' ' -f1-3 /proc/loadavg)"
