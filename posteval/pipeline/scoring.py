"""Scoring and training health: every metric of a dataset from its stored outputs, the overfitting
verdict and forgetting against the base model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from posteval import timing
from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.db.retry import retry_transient
from posteval.errors import RunnerError
from posteval.evaluators import EvalInputs
from posteval.hashing import sha256_json
from posteval.inputs.checkpoint import CheckpointInfo
from posteval.inputs.suite import HEALTH_DATASETS, Suite
from posteval.inputs.suite_schema import PAIRWISE_METRICS
from posteval.judging.forgetting import ForgettingReport, assess_forgetting
from posteval.judging.health import HealthReport, assess_log, assess_measured, combine, read_loss_history
from posteval.pipeline.code import execute, sample_keys
from posteval.pipeline.datasets import DatasetRef, load
from posteval.pipeline.identity import config_hash
from posteval.pipeline.judged import judge_dataset
from posteval.results import MetricResult, RunDetailResult
from posteval.runners import tokenization_policy
from posteval.runners.base import policy_signature


@dataclass
class DatasetOutcome:
    """Scored results of one dataset, ready to persist."""

    dataset: DatasetRef
    keys: list[str]
    results: list[MetricResult]
    warnings: list[str] = field(default_factory=list)
    details: list[RunDetailResult] = field(default_factory=list)  # reports: never compared or gated


@timing.timed("scoring and CIs")
def score(
    checkpoint: CheckpointInfo,
    suite: Suite,
    dataset: DatasetRef,
    *,
    database_url: str | None = None,
    base: CheckpointInfo | None = None,
) -> DatasetOutcome:
    """Every metric of the dataset, from the stored outputs (and its judge's verdicts on them).

    ``base`` is the model a pairwise judge ``against: base`` compares the answers with; when the checkpoint
    is the one compared with (the base scoring itself) the pairwise metrics are left out.
    """
    spec = dataset.spec
    loaded = load(spec)
    chash = config_hash(suite, spec, checkpoint)

    def read() -> dict[str, repo.StoredOutput]:
        with session_scope(database_url) as session:
            return repo.cached_outputs(session, checkpoint.fingerprint, dataset.fingerprint, chash)

    stored = retry_transient(read, f"reading the outputs of {spec.name}")
    is_code = spec.kind == "code"
    wanted = sample_keys(loaded.keys, spec.samples()) if is_code else loaded.keys
    missing = [key for key in wanted if key not in stored]
    if missing:
        raise RunnerError(f"dataset {spec.name!r}: {len(missing)} outputs missing (e.g. {missing[:3]})")
    executions: list[list[dict[str, Any]]] | None = None
    warnings: list[str] = []
    if is_code:  # every sample runs in the sandbox; the first sample stands for the example's output
        executions, warnings = execute(loaded, {key: stored[key].output or "" for key in wanted})
    rows = [stored[f"{key}#0" if is_code else key] for key in loaded.keys]
    extras = [row.extra for row in rows]
    scored_text = spec.kind == "perplexity"
    choice = spec.scoring == "loglikelihood"
    choice_lists = loaded.choice_lists() if choice else None
    predictions = [row.output or "" for row in rows]
    judgments = judge_dataset(
        suite, dataset, loaded, predictions, checkpoint=checkpoint, base=base, database_url=database_url
    )
    inputs = EvalInputs(
        predictions=predictions,
        references=loaded.gold_choices() if choice else loaded.references,
        labels=spec.labels,
        rows=loaded.rows,
        logprob_sums=[float(e["logprob"]) for e in extras] if scored_text else None,
        token_counts=[int(e["n_tokens"]) for e in extras] if scored_text else None,
        byte_counts=[int(e["n_bytes"]) for e in extras] if scored_text else None,
        choices=choice_lists,
        executions=executions,
        choice_logprobs=None
        if choice_lists is None
        else [[float(e["logprobs"][c]) for c in cs] for e, cs in zip(extras, choice_lists, strict=True)],
        judgments=judgments,
        seed=suite.seed,
        n_bootstrap=suite.bootstrap_resamples,
    )
    # The signature also names what the number was computed from, so a stored row explains itself.
    # The tokenization policy is spelled out: comparisons refuse runs whose policies differ.
    tokens = policy_signature(tokenization_policy(checkpoint, suite.bos))
    provenance = (
        f"|checkpoint:{checkpoint.fingerprint[:16]}|dataset:{dataset.fingerprint[:16]}|config:{chash[:16]}"
        f"|{tokens}"
    )
    if is_code:
        provenance += f"|sandbox:{spec.sandbox.backend}|limits:{sha256_json(spec.sandbox.model_dump())[:16]}"
    results, details = [], []
    for metric in spec.bound_metrics():
        if metric.info.name in PAIRWISE_METRICS and "pairwise" not in (judgments or {}):
            continue  # nothing to compare with: the base model scoring itself
        result = metric.compute(inputs)
        signature = result.signature + provenance
        if metric.info.is_report:
            details.append(RunDetailResult(result.name, result.n, signature, result.details))
        else:
            results.append(dataclasses.replace(result, signature=signature))
    return DatasetOutcome(
        dataset=dataset, keys=loaded.keys, results=results, warnings=warnings, details=details
    )


@timing.timed("training health")
def assess_health(
    checkpoint: CheckpointInfo, suite: Suite, outcomes: Sequence[DatasetOutcome]
) -> HealthReport | None:
    """The overfitting detector: the training log's verdict, combined with the measured gap if any."""
    options = suite.training_health
    if options is None:
        return None
    if checkpoint.runner == "hf":
        points, missing = read_loss_history(checkpoint.path)
    else:
        points, missing = [], f"{checkpoint.path} is a served model: no training log"
    report = assess_log(points, options, missing)
    losses = {o.dataset.spec.name: r.value for o in outcomes for r in o.results if r.name == "token_loss"}
    measured = None
    if all(name in losses for name in HEALTH_DATASETS):
        measured = assess_measured(losses["train-sample"], losses["validation"], options)
    combined = combine(report, measured)
    curve = [{"step": p.step, "split": p.split, "value": p.value} for p in points]
    return HealthReport(**{**combined.as_dict(), "details": {**combined.details, "loss_curve": curve}})


@timing.timed("forgetting")
def assess_base_forgetting(
    suite: Suite, base_outcomes: Sequence[DatasetOutcome], outcomes: Sequence[DatasetOutcome]
) -> ForgettingReport:
    """Forgetting on the suite's general datasets: the fine-tune's results against the base model's."""
    tuned = {o.dataset.spec.name: o for o in outcomes}
    pairs = [
        (b.dataset.spec.name, b.results, tuned[b.dataset.spec.name].results)
        for b in base_outcomes
        if b.dataset.spec.name in tuned and tuned[b.dataset.spec.name].keys == b.keys
    ]
    return assess_forgetting(pairs, suite.forgetting, seed=suite.seed, n_resamples=suite.bootstrap_resamples)
