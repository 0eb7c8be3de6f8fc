"""Sharded over a local two-process Dask cluster, an evaluation stores just what the default runner does."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from posteval.db.migrate import upgrade
from posteval.db.models import Dataset, ExampleScore, Metric, Prediction
from posteval.errors import InputError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.pipeline import shard_range
from tests.helpers import HELDOUT, heldout_rows, write_jsonl

SUITE = """\
name: sharded
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 6, stop: ["\\n"], batch_size: 4}
datasets:
  - {name: typed, path: clauses.jsonl, key: id, prompt: "Clause: {text}\\nType:", reference: label,
     metrics: [exact_match]}
  - name: chosen
    path: clauses.jsonl
    key: id
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    scoring: loglikelihood
    metrics: [accuracy]
  - {name: general, path: general.jsonl, key: id, kind: perplexity, metrics: [perplexity]}
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sharded")
    write_jsonl(folder / "clauses.jsonl", heldout_rows(12))
    general = [json.loads(line) for line in (HELDOUT.parent / "general.jsonl").read_text().splitlines()[:9]]
    write_jsonl(folder / "general.jsonl", general)
    (folder / "suite.yaml").write_text(SUITE)
    return folder / "suite.yaml"


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        yield str(cluster.scheduler_address)


def _stored(url: str) -> dict[str, Any]:
    """Everything a run leaves behind, without ids and times: outputs, metrics, per-example scores."""
    engine = create_engine(url)
    with Session(engine) as session:
        predictions = session.execute(
            # Two datasets share example keys: the config hash (the same in both databases) breaks the tie,
            # which insertion order cannot (dask shards store concurrently).
            select(Prediction.example_key, Prediction.output, Prediction.extra).order_by(
                Prediction.example_key, Prediction.config_hash
            )
        ).all()
        metrics = session.execute(
            select(Dataset.name, Metric.name, Metric.value, Metric.ci_low, Metric.ci_high, Metric.n)
            .join(Dataset, Metric.dataset_id == Dataset.id)
            .order_by(Dataset.name, Metric.name)
        ).all()
        scores = session.execute(
            select(ExampleScore.metric, ExampleScore.example_key, ExampleScore.value).order_by(
                ExampleScore.metric, ExampleScore.example_key
            )
        ).all()
    engine.dispose()
    return {
        "predictions": [tuple(r) for r in predictions],
        "metrics": [tuple(r) for r in metrics],
        "scores": [tuple(r) for r in scores],
    }


def _close(a: Any, b: Any) -> bool:
    """Equal, except that floats may differ by float32 rounding: shards batch examples differently."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_a_dask_sharded_run_stores_the_same_results_as_the_default_runner(
    prefect_harness: None, finetuned_checkpoint: Path, suite: Path, dask_address: str, tmp_path: Path
) -> None:
    urls = {name: f"sqlite:///{tmp_path / f'{name}.db'}" for name in ("default", "dask")}
    for url in urls.values():
        upgrade(url)
    evaluate_checkpoint(checkpoint=str(finetuned_checkpoint), suite=str(suite), database_url=urls["default"])
    evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint),
        suite=str(suite),
        database_url=urls["dask"],
        task_runner="dask",
        dask_address=dask_address,
    )
    default, sharded = _stored(urls["default"]), _stored(urls["dask"])
    assert len(default["predictions"]) == 12 + 12 + 9
    assert [p[:2] for p in sharded["predictions"]] == [p[:2] for p in default["predictions"]]  # texts, labels
    assert _close(sharded, default)  # and every log-probability, metric and score, to float32 rounding
    assert _completed_task_runs("-shard-") == [
        "run-model-chosen-shard-1-of-2",
        "run-model-chosen-shard-2-of-2",
        "run-model-general-shard-1-of-2",
        "run-model-general-shard-2-of-2",
        "run-model-typed-shard-1-of-2",
        "run-model-typed-shard-2-of-2",
    ]


def _completed_task_runs(part: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=part)))
    return sorted(r.name for r in runs if r.state is not None and r.state.is_completed())


def test_shards_are_contiguous_blocks_covering_every_example_once() -> None:
    blocks = [shard_range(9, index, 4) for index in range(4)]
    assert [list(b) for b in blocks] == [[0, 1], [2, 3], [4, 5], [6, 7, 8]]


def test_an_unknown_task_runner_is_refused_before_any_work(prefect_harness: None, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="task runner 'ray': expected one of default, dask"):
        evaluate_checkpoint(checkpoint=str(tmp_path), suite="s.yaml", task_runner="ray")
