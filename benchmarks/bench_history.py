"""Time the history queries on 10,000 runs with 20 metrics each, on SQLite and PostgreSQL.

Run with ``python benchmarks/bench_history.py``. Each backend gets a fresh database migrated to head and
filled with the same seeded synthetic rows (bulk Core inserts), then every query is called through its
public API: the median of ``--repeat`` calls after one warm-up. The target is 100 ms; no time is asserted.
PostgreSQL is vacuumed and analyzed after the load, as autovacuum would; SQLite gets no ANALYZE, since
posteval never runs one, so its planner works without statistics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from posteval.db import queries
from posteval.db.engine import get_engine
from posteval.db.migrate import upgrade
from posteval.db.models import Checkpoint, Dataset, EvalRun, ExampleScore, Metric, Suite
from posteval.db.scratch import scratch_database
from posteval.errors import InputError
from posteval.judging import baseline, compare

MODELS, DATASETS, MODEL = 50, 3, "model-12"
# A share of checkpoints also have a failed attempt, retried; like mark_failed, it leaves no metrics behind.
FAILED_SHARE = 0.05
SCORED_EVERY = 100  # runs of every 100th checkpoint keep EXAMPLES per-example 0/1 scores per dataset
EXAMPLES = 200
START = datetime(2026, 1, 1, tzinfo=UTC)
TARGET_MS = 100.0
TABLES = (Suite, Dataset, Checkpoint, EvalRun, Metric, ExampleScore)  # in foreign-key order
ADMIN_URL = os.environ.get("POSTEVAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

Rows = dict[str, list[dict[str, Any]]]
Case = tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def _run(rng: random.Random, ckpt: int, model: str, created: datetime, error: str | None) -> dict[str, Any]:
    run = dict(
        id=_hex(rng, 128), checkpoint_id=ckpt, suite_id=1, model_name=model, trigger="watch", error=error
    )
    return run | dict(
        status="failed" if error else "succeeded", idempotency_key=_hex(rng, 256), created_at=created
    )


def synthetic_rows(n_runs: int, n_metrics: int, seed: int = 0) -> Rows:
    """MODELS models x n_runs/MODELS checkpoints (training steps), one suite, DATASETS datasets.

    Every checkpoint has one succeeded run with ``n_metrics`` metric rows (metric i on dataset i % DATASETS);
    some also have a failed attempt before it. Columns left out take their model defaults or NULL.
    """
    rng = random.Random(seed)
    steps = n_runs // MODELS
    rows: Rows = {model.__tablename__: [] for model in TABLES}
    rows["suites"] = [dict(id=1, name="core", fingerprint=_hex(rng, 256), source_text="name: core")]
    rows["datasets"] = [
        dict(id=d + 1, name=f"dataset-{d}", fingerprint=_hex(rng, 256), row_count=EXAMPLES, path="")
        for d in range(DATASETS)
    ]
    for step in range(steps):  # the models' checkpoints interleave in time, one a minute
        for m in range(MODELS):
            ckpt = len(rows["checkpoints"]) + 1
            created = START + timedelta(minutes=ckpt)
            rows["checkpoints"].append(
                dict(id=ckpt, fingerprint=_hex(rng, 256), path=f"/ckpt/model-{m}/step-{step}")
                | dict(model_name=f"model-{m}", training_step=100 * step, created_at=created)
            )
            if rng.random() < FAILED_SHARE:
                rows["eval_runs"].append(
                    _run(rng, ckpt, f"model-{m}", created - timedelta(seconds=50), "OOM")
                )
            run = _run(rng, ckpt, f"model-{m}", created, None)
            rows["eval_runs"].append(run)
            quality = 0.4 + 0.3 * step / steps
            for i in range(n_metrics):
                value = min(1.0, quality + rng.gauss(0, 0.02))
                rows["metrics"].append(
                    dict(run_id=run["id"], dataset_id=i % DATASETS + 1, name=f"metric_{i}", value=value)
                    | dict(ci_low=value - 0.03, ci_high=value + 0.03, n=EXAMPLES, higher_is_better=i % 4 != 3)
                    | dict(signature=f"metric:metric_{i}|n:{EXAMPLES}|seed:0|suite:core|version:0.1.0")
                )
            if step % SCORED_EVERY == 0:
                rows["example_scores"] += [
                    dict(run_id=run["id"], dataset_id=i + 1, metric=f"metric_{i}", example_key=f"ex-{k}")
                    | dict(value=float(rng.random() < quality))
                    for i in range(min(DATASETS, n_metrics))
                    for k in range(EXAMPLES)
                ]
    return rows


def build(url: str, rows: Rows) -> float:
    """Migrate ``url`` to head and bulk-insert ``rows``; the seconds it took."""
    started = time.perf_counter()
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        for model in TABLES:
            conn.execute(insert(model), rows[model.__tablename__])
    if engine.dialect.name == "postgresql":  # the state autovacuum leaves a bulk-loaded table in
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def _unknown_run(prefix: str, *, database_url: str) -> None:
    """resolve_run_id's refusal of an unknown id, with the closest of the latest 10,000 ids."""
    with contextlib.suppress(InputError):
        queries.resolve_run_id(prefix, database_url=database_url)


def cases(rows: Rows, n_metrics: int) -> dict[str, Case]:
    """Each query as (function, args, keyword args), on the runs of one model."""
    mine = [r["id"] for r in rows["eval_runs"] if not r["error"] and r["model_name"] == MODEL]
    scored_ids = {s["run_id"] for s in rows["example_scores"]}
    scored = [run_id for run_id in mine if run_id in scored_ids]
    last, before = mine[-1], mine[-2]
    metric, dataset = f"metric_{min(7, n_metrics - 1)}", f"dataset-{min(7, n_metrics - 1) % DATASETS}"
    since = START + timedelta(minutes=len(rows["checkpoints"]) // 2)
    found: dict[str, Case] = {
        "runs(model, limit=50)": (queries.runs, (), dict(model=MODEL, limit=50)),
        "runs(status=failed, since)": (queries.runs, (), dict(status="failed", since=since)),
        "metric_history(metric, model)": (queries.metric_history, (metric,), dict(model=MODEL)),
        "metric_history(+ dataset)": (queries.metric_history, (metric,), dict(model=MODEL, dataset=dataset)),
        "run_metrics(run)": (queries.run_metrics, (last,), {}),
        "run_summary(run)": (queries.run_summary, (last,), {}),
        "resolve_run_id(8-char prefix)": (queries.resolve_run_id, (last[:8],), {}),
        "resolve_run_id(unknown id)": (_unknown_run, ("zzzz1234",), {}),
        "baseline_for(run)": (baseline.baseline_for, (last,), {}),
        "compare_runs (metric level)": (compare.compare_runs, (before, last), {}),
    }
    if len(scored) >= 2:  # 3 of the metrics with per-example scores: 3 paired bootstraps of 1,000 resamples
        found["compare_runs (+ example scores)"] = (compare.compare_runs, (scored[0], scored[1]), {})
    return found


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """The median wall time of ``repeat`` calls after one warm-up call, in milliseconds."""
    if getattr(fn(), "empty", False):  # a query finding nothing would time nothing: the data no longer fits
        raise RuntimeError(f"{fn} found no rows")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


@contextlib.contextmanager
def sqlite_database() -> Iterator[str]:
    """A SQLite file in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'history.db'}"
        yield url
        get_engine(url).dispose()


def main() -> None:
    """Build the databases, time the queries, print the table (and write it as JSON with --out)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000, help="succeeded runs (a multiple of 50)")
    parser.add_argument("--metrics", type=int, default=20, help="metric rows per succeeded run")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-url", default=ADMIN_URL, help="where to create a scratch database")
    parser.add_argument("--out", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()

    started = time.perf_counter()
    rows = synthetic_rows(args.runs, args.metrics)
    counts = {table: len(table_rows) for table, table_rows in rows.items()}
    print(
        f"generated in {time.perf_counter() - started:.1f}s:",
        ", ".join(f"{n} {t}" for t, n in counts.items()),
    )
    databases = {"SQLite": sqlite_database()}
    if not args.skip_postgres:
        databases["PostgreSQL"] = scratch_database(args.postgres_url, "posteval_bench")
    build_s: dict[str, float] = {}
    ms: dict[str, dict[str, float]] = {}
    for backend, database in databases.items():
        with database as url:
            build_s[backend] = build(url, rows)
            print(f"{backend}: migrated and filled in {build_s[backend]:.1f}s")
            for label, (fn, fn_args, kwargs) in cases(rows, args.metrics).items():
                call = partial(fn, *fn_args, **kwargs, database_url=url)
                ms.setdefault(label, {})[backend] = median_ms(call, args.repeat)

    print(f"\nmedian of {args.repeat} calls after a warm-up, {os.cpu_count()} CPUs")
    print(f"{'query':<32}" + "".join(f"{b + ' ms':>16}" for b in databases) + f"  under {TARGET_MS:.0f} ms")
    for label, by_backend in ms.items():
        under = "yes" if max(by_backend.values()) < TARGET_MS else "NO"
        print(f"{label:<32}" + "".join(f"{by_backend[b]:>16.1f}" for b in databases) + f"  {under}")
    if args.out:
        report = {"runs": args.runs, "metrics": args.metrics, "rows": counts, "build_s": build_s, "ms": ms}
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
