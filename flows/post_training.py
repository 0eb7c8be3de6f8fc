"""The post-training flow: one checkpoint, one suite, every dataset, results in the database."""

from __future__ import annotations

import uuid

from prefect import flow
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from posteval import pipeline
from posteval.errors import GateFailed, short_error
from posteval.flows.run_log import log_gate, log_health, log_metrics, log_run
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import Suite
from posteval.pipeline import check_task_runner, heartbeat
from posteval.pipeline.resolve import Resolved
from posteval.tasks.gate import gate_task
from posteval.tasks.health import forgetting_task, overfitting_task
from posteval.tasks.mlflow_export import export_to_mlflow
from posteval.tasks.model import run_models
from posteval.tasks.resolve import resolve_task
from posteval.tasks.runs import mark_failed_task, persist_task, register_run_task
from posteval.tasks.score import score_task


@flow(name="post-training-evaluation", log_prints=False)
def evaluate_checkpoint(
    checkpoint: str,
    suite: str,
    trigger: str = "manual",
    model_name: str | None = None,
    force: bool = False,
    database_url: str | None = None,
    adapter_base: str | None = None,
    task_runner: str = "default",
    dask_address: str | None = None,
    step: int | None = None,
    resolved: Resolved | None = None,
) -> str:
    """Evaluate ``checkpoint`` on ``suite`` and return the run id.

    ``checkpoint`` is a transformers folder, a PEFT adapter folder (on the base its config names, or
    ``adapter_base``), or a served model ``openai:MODEL@URL``.

    Bad input (checkpoint, base model, suite, datasets, a pairwise judge's ``against`` run) is refused
    before a run row exists or any model work starts. Once the run is registered, any failure marks it
    failed with the error text and re-raises, so the flow run fails too. After a succeeded evaluation
    the run is compared with its baseline; a regression beyond the suite's gates raises GateFailed, so
    the flow run ends Failed while the run and its results stay stored.

    ``step`` is the training step when the folder's trainer_state.json does not say (a final model
    saved by ``save_model()``); it orders the checkpoint in its model's lineage.

    ``resolved`` is what :func:`posteval.pipeline.resolve.resolve` returned for these inputs (the CLI
    resolves before Prefect starts); without it the flow resolves ``checkpoint`` and ``suite`` itself.

    ``task_runner="dask"`` shards the model work of every dataset across the Dask cluster at
    ``dask_address`` (a temporary local one without it); results are the same as the default runner's.
    """
    check_task_runner(task_runner, dask_address)
    if resolved is None:
        resolved = resolve_task(checkpoint, suite, model_name, adapter_base, step)
    ckpt, loaded, base = resolved.checkpoint, resolved.suite, resolved.base
    spec = loaded.suite
    datasets = list(resolved.datasets)
    pipeline.check_named_runs(datasets, database_url)  # a pairwise `against: RUN_ID` that cannot answer
    claim = uuid.uuid4().hex  # this delivery's claim on the run: a retried claim is recognised
    run = register_run_task(
        ckpt, loaded, datasets, trigger, flow_run.get_id(), force, base, database_url, claim
    )
    log_run(run.run_id, run.status, ckpt, spec.name)
    if run.status == "succeeded":  # a re-delivered trigger: the stored outcome stands, its verdict too
        kept = pipeline.stored_gate(run.run_id, database_url=database_url)
        return _gate_outcome(run.run_id, *_gate_and_export(run.run_id, spec, database_url, kept))
    try:
        with heartbeat(run, database_url=database_url):
            _evaluate(run, ckpt, spec, datasets, base, database_url, task_runner, dask_address)
    except (KeyboardInterrupt, SystemExit, TerminationSignal) as exc:
        # Ctrl-C or SIGTERM (Prefect's own SIGTERM bridge raises TerminationSignal during a flow run):
        # marked directly (no task, no Prefect API round trip), then re-raised.
        pipeline.fail(run.run_id, "interrupted", database_url=database_url, claim_id=run.claim_id)
        exc.add_note(f"posteval run {run.run_id} marked failed (interrupted)")
        raise
    except BaseException as exc:
        mark_failed_task(run.run_id, short_error(exc), database_url, run.claim_id)
        raise
    # The evaluation succeeded and is stored; the gate decides whether the flow run fails.
    return _gate_outcome(run.run_id, *_gate_and_export(run.run_id, spec, database_url))


def _evaluate(
    run: pipeline.RunRef,
    ckpt: CheckpointInfo,
    spec: Suite,
    datasets: list[pipeline.DatasetRef],
    base: CheckpointInfo | None,
    database_url: str | None,
    task_runner: str,
    dask_address: str | None,
) -> None:
    """Model outputs, scores, training health and forgetting, then the one-transaction persist."""
    general = [dataset for dataset in datasets if dataset.spec.general]
    work = [(ckpt, dataset) for dataset in datasets]
    if base is not None:  # cached by the base's fingerprint: evaluated once for all its fine-tunes
        work += [(base, dataset) for dataset in datasets if dataset.spec.general or pipeline.paired(dataset)]
    warnings = run_models(work, spec, database_url, task_runner, dask_address)
    outcomes = [score_task(ckpt, spec, dataset, database_url, base) for dataset in datasets]
    # quote(): per-example scores are large; Prefect need not walk them looking for futures.
    health = overfitting_task(ckpt, spec, quote(outcomes))
    forgetting = None
    if base is not None:
        base_outcomes = [score_task(base, spec, dataset, database_url, base) for dataset in general]
        forgetting = forgetting_task(spec, quote(base_outcomes), quote(outcomes))
    if health is not None and health.verdict == "unknown":
        warnings.append(f"overfitting verdict unknown: {health.reason}")
    log_metrics(outcomes)
    log_health(health, forgetting)
    persist_task(run.run_id, quote(outcomes), warnings, health, forgetting, database_url, run.claim_id)


def _gate_and_export(
    run_id: str, spec: Suite, database_url: str | None, kept: tuple[str, str] | None = None
) -> tuple[str, str]:
    """The gate (or the verdict the run already has, ``kept``), then the stored run logged to MLflow when
    configured (gate verdict included; a re-delivery completes an export an earlier delivery could not)."""
    outcome = kept or gate_task(run_id, spec, database_url)
    export_to_mlflow(run_id, database_url)
    return outcome


def _gate_outcome(run_id: str, status: str, summary: str) -> str:
    log_gate(run_id, status, summary)
    if status == "failed":
        raise GateFailed(run_id, summary)
    return run_id
