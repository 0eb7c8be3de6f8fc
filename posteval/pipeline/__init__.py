"""The stages of an evaluation run as plain functions; posteval.tasks wraps each one for Prefect.

Between stages only small, serialisable values travel (checkpoint info, suite, dataset fingerprints,
run ids, metric results); model outputs go through the database, which is the cache and the resume point.
One module per seam: datasets (the dataset cache), identity (config hash, idempotency key), registration
(claiming a run, its heartbeat), outputs (per-mode model outputs), shards (task runners, Dask shards),
judged (LLM-judge verdicts), scoring (metrics, health, forgetting), persistence (one transaction; fail)
and gating (the gate).
The pipeline may import every core layer below the face; never posteval.flows, posteval.tasks or Prefect.
"""

from posteval.pipeline.datasets import DatasetRef, load, prepare_dataset
from posteval.pipeline.gating import gate, stored_gate
from posteval.pipeline.identity import config_hash, idempotency_key, output_settings, run_settings
from posteval.pipeline.judged import check_named_runs, paired
from posteval.pipeline.outputs import run_model
from posteval.pipeline.persistence import fail, persist, record_trigger_failure
from posteval.pipeline.registration import RunRef, heartbeat, register_run
from posteval.pipeline.scoring import DatasetOutcome, assess_base_forgetting, assess_health, score
from posteval.pipeline.shards import TASK_RUNNERS, check_task_runner, shard_range

__all__ = [
    "TASK_RUNNERS",
    "DatasetOutcome",
    "DatasetRef",
    "RunRef",
    "assess_base_forgetting",
    "assess_health",
    "check_named_runs",
    "check_task_runner",
    "config_hash",
    "fail",
    "gate",
    "heartbeat",
    "idempotency_key",
    "load",
    "output_settings",
    "paired",
    "persist",
    "prepare_dataset",
    "record_trigger_failure",
    "register_run",
    "run_model",
    "run_settings",
    "score",
    "shard_range",
    "stored_gate",
]
