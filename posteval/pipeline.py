"""The stages of an evaluation run as plain functions; tasks/ wraps each one for Prefect.

Between stages only small, serialisable values travel (checkpoint info, suite, dataset fingerprints,
run ids, metric results); model outputs go through the database, which is the cache and the resume point.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from evaluators import EvalInputs
from posteval import progress
from posteval.baseline import baseline_for
from posteval.checkpoint import CheckpointInfo
from posteval.compare import Comparison, compare_runs
from posteval.data import LoadedDataset, load_dataset
from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.db.models import EvalRun, utcnow
from posteval.db.retry import retry_transient
from posteval.errors import ERROR_LIMIT, InputError, RunnerError, short_error
from posteval.forgetting import ForgettingReport, assess_forgetting
from posteval.hashing import sha256_json, stat_key
from posteval.health import HealthReport, assess_log, assess_measured, combine, read_loss_history
from posteval.results import MetricResult, RunDetailResult
from posteval.runners import get_runner, tokenization_policy
from posteval.runners.base import GenerationOptions, Loglikelihood, Runner, policy_signature
from posteval.runners.hf import pick_device, pick_dtype
from posteval.settings import get_settings
from posteval.suite import HEALTH_DATASETS, DatasetSpec, LoadedSuite, Suite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetRef:
    """A loaded dataset as passed between stages: its spec and content identity, not its rows."""

    spec: DatasetSpec
    fingerprint: str
    row_count: int


@dataclass(frozen=True)
class RunRef:
    """The run a flow works on, whether an earlier delivery already finished it, and this delivery's claim."""

    run_id: str
    created: bool
    status: str
    claim_id: str | None = None


@dataclass
class DatasetOutcome:
    """Scored results of one dataset, ready to persist."""

    dataset: DatasetRef
    keys: list[str]
    results: list[MetricResult]
    warnings: list[str] = field(default_factory=list)
    details: list[RunDetailResult] = field(default_factory=list)  # reports: never compared or gated


@lru_cache(maxsize=16)
def _load_cached(spec_json: str, stamp: tuple[str, ...]) -> LoadedDataset:
    return load_dataset(DatasetSpec.model_validate_json(spec_json))


def _stamp(path: Path) -> tuple[str, ...]:
    """Every file's :func:`~posteval.hashing.stat_key` (path, inode, size, mtime, ctime), sorted.

    An edited dataset is loaded again, not served stale, even when it was copied over with preserved
    times and the same total size.
    """
    if not path.exists():
        return ()
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return tuple(sorted(stat_key(f) for f in files))


def load(spec: DatasetSpec) -> LoadedDataset:
    """The dataset ``spec`` names, loaded once per process while its files are unchanged."""
    return _load_cached(spec.model_dump_json(), _stamp(spec.path))


def prepare_dataset(spec: DatasetSpec) -> DatasetRef:
    """Load, validate and fingerprint one dataset."""
    loaded = load(spec)
    return DatasetRef(spec=spec, fingerprint=loaded.fingerprint, row_count=len(loaded))


def output_settings(suite: Suite, spec: DatasetSpec, checkpoint: CheckpointInfo) -> dict[str, object]:
    """Everything that decides a dataset's model outputs besides checkpoint and data (never the batch size).

    The one source of a run's output identity: it feeds the config hash (the prediction cache key and the
    run's idempotency key), is stored on the run, and two runs are compared only when it is equal for every
    dataset they share. A setting added here takes part in all three.
    """
    app = get_settings()
    # The key decides which row an example key names; the prompt templates every kind's model input.
    settings: dict[str, object] = {
        "runner": checkpoint.runner,
        "kind": spec.kind,
        "key": spec.key,
        "prompt": spec.prompt,
    }
    if checkpoint.runner == "hf":
        settings["dtype"] = str(pick_dtype(pick_device(app.device), app.dtype))
        settings["max_length"] = app.max_length
    # The resolved tokenization policy decides what the model conditions on (for a served model it
    # holds bos_text): a changed policy is a new config, never a silent cache hit.
    settings["tokenization"] = tokenization_policy(checkpoint, suite.bos)
    if spec.kind == "perplexity":
        settings |= {"text": spec.text, "stride": spec.stride}
    elif spec.scoring == "loglikelihood":
        settings |= {"prompt": spec.prompt, "labels": spec.labels, "delimiter": spec.target_delimiter}
    else:
        settings |= {
            "prompt": spec.prompt,
            "max_new_tokens": suite.generation.max_new_tokens,
            "stop": suite.generation.stop,
        }
    return settings


def config_hash(suite: Suite, spec: DatasetSpec, checkpoint: CheckpointInfo) -> str:
    """The hash of :func:`output_settings`: which stored outputs belong to this dataset and checkpoint."""
    return sha256_json(output_settings(suite, spec, checkpoint))


def run_settings(checkpoint: CheckpointInfo, suite: Suite, datasets: Sequence[DatasetRef]) -> dict[str, Any]:
    """What a run's numbers depend on besides checkpoint and data, as stored on the run.

    Per dataset: its output settings and their hash, and what turns outputs into scores (reference field,
    label set). For the run: the seed and bootstrap size of its statistics (a change is noted when runs
    are compared, never a reason to refuse). Gates, tolerances, batch size and paths are not here.
    """
    per_dataset: dict[str, Any] = {}
    for ref in datasets:
        spec = ref.spec
        settings = output_settings(suite, spec, checkpoint)
        per_dataset[spec.name] = {
            "output": settings,
            "config_hash": sha256_json(settings),
            "scoring": {"reference": spec.reference, "labels": spec.labels},
        }
    return {
        "datasets": per_dataset,
        "statistics": {"seed": suite.seed, "bootstrap_resamples": suite.bootstrap_resamples},
    }


def idempotency_key(checkpoint: CheckpointInfo, suite: LoadedSuite, datasets: Sequence[DatasetRef]) -> str:
    """Content identity of a run: the same checkpoint, suite, data and output settings (dtype, context
    cap...) always map to the same run, and a change of any of them makes a new one."""
    fingerprints = sorted(d.fingerprint for d in datasets)
    configs = sorted(config_hash(suite.suite, d.spec, checkpoint) for d in datasets)
    return sha256_json(
        [checkpoint.fingerprint, checkpoint.model_name, suite.fingerprint, fingerprints, configs]
    )


def register_run(
    checkpoint: CheckpointInfo,
    suite: LoadedSuite,
    datasets: Sequence[DatasetRef],
    *,
    trigger: str,
    flow_run_id: str | None = None,
    force: bool = False,
    base: CheckpointInfo | None = None,
    database_url: str | None = None,
    claim_id: str | None = None,
    holder_finished: Callable[[str], bool | None] | None = None,
) -> RunRef:
    """Create (or find) the run row and claim it (-> running), unless an earlier delivery succeeded.

    A run held by another delivery is taken over when that holder is gone: its heartbeat is older than
    the lease (POSTEVAL_RUN_LEASE_S), its process on this host no longer exists, or ``holder_finished``
    (the flow layer asks Prefect) says its flow run ended. ``claim_id`` identifies this delivery; a
    retried claim with the same id succeeds again instead of finding the run busy.
    """
    key = idempotency_key(checkpoint, suite, datasets)
    if force:
        key = sha256_json([key, utcnow().isoformat()])
    claim = claim_id or uuid.uuid4().hex
    lease = get_settings().run_lease_s

    def claim_it() -> RunRef:
        with session_scope(database_url) as session:
            base_id = None if base is None else repo.upsert_checkpoint(session, base).id
            ckpt = repo.upsert_checkpoint(session, checkpoint, base_id)
            suite_row = repo.upsert_suite(session, suite.suite.name, suite.fingerprint, suite.source_text)
            run, created = repo.get_or_create_run(
                session,
                checkpoint_id=ckpt.id,
                suite_id=suite_row.id,
                model_name=checkpoint.model_name,
                trigger=trigger,
                idempotency_key=key,
                flow_run_id=flow_run_id,
            )
            if run.output_settings is None:
                stored = run_settings(checkpoint, suite.suite, datasets)
                run.output_settings, run.config_hash = stored, sha256_json(stored)
            if run.status == "succeeded":
                return RunRef(run.id, created, run.status)
            holder_gone = run.status == "running" and _holder_gone(run, holder_finished)
            claimed = repo.claim_run(
                session,
                run.id,
                claim,
                flow_run_id=flow_run_id,
                claimed_by=repo.holder(),
                stale_before=utcnow() - timedelta(seconds=lease),
                take_over=holder_gone,
            )
            if not claimed:
                beat = run.heartbeat_at or run.started_at
                raise RunnerError(
                    f"run {run.id} of this checkpoint and suite is already being evaluated "
                    f"(flow run {run.flow_run_id}) by {run.claimed_by or 'an unknown process'}, last "
                    f"heartbeat {beat:%Y-%m-%d %H:%M:%S}; it is taken over once silent for {lease:g}s, "
                    f"or now after `posteval runs reset {run.id[:12]}`"
                )
            return RunRef(run.id, created, "running", claim)

    return retry_transient(claim_it, "registering the run")


def _holder_gone(run: EvalRun, holder_finished: Callable[[str], bool | None] | None) -> bool:
    """Whether the delivery holding ``run`` is known dead: its process on this host is gone, or its
    flow run ended (Crashed, Cancelled, or any final state) while the run still says running."""
    place, _, pid = (run.claimed_by or "").rpartition(":")
    if place == repo.here() and pid.isdigit() and int(pid) != os.getpid():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
    if holder_finished is not None and run.flow_run_id:
        return holder_finished(run.flow_run_id) is True
    return False


@contextmanager
def heartbeat(run: RunRef, *, database_url: str | None = None) -> Iterator[None]:
    """Beat the run's heartbeat every lease/4 seconds from a background thread while the block runs."""
    if run.claim_id is None:
        yield
        return
    claim_id = run.claim_id
    interval = get_settings().run_lease_s / 4
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with session_scope(database_url) as session:
                    if not repo.heartbeat(session, run.run_id, claim_id):
                        log.warning("run %s is no longer held by this delivery", run.run_id)
                        return
            except Exception as exc:  # a missed beat is retried at the next interval
                log.warning("heartbeat of run %s failed: %s", run.run_id, short_error(exc))

    thread = threading.Thread(target=beat, name=f"posteval-heartbeat-{run.run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


Row = tuple[str, str | None, dict[str, Any]]  # example key, output text, extra values


def _generated_rows(
    runner: Runner, suite: Suite, loaded: LoadedDataset, todo: list[int]
) -> Iterator[list[Row]]:
    prompts = loaded.prompts()
    options = GenerationOptions(suite.generation.max_new_tokens, tuple(suite.generation.stop))
    batches = runner.generate([prompts[i] for i in todo], options, batch_size=suite.generation.batch_size)
    for indices, outputs in batches:
        yield [(loaded.keys[todo[i]], out, {}) for i, out in zip(indices, outputs, strict=True)]


def _choice_rows(runner: Runner, suite: Suite, loaded: LoadedDataset, todo: list[int]) -> Iterator[list[Row]]:
    """Multiple choice: every choice scored as a continuation; the likeliest (by summed log-prob) is the
    output. Each choice's log-prob, token count and byte count are stored, so accuracy_norm needs no rerun.

    A choice scored over zero tokens would get log-prob 0 and always win: it is an error naming the example.
    """
    spec = loaded.spec
    prompts, choice_lists = loaded.prompts(), loaded.choice_lists()
    requests: list[tuple[str, str]] = []
    owner: list[tuple[int, int]] = []  # (position in todo, choice index) of every request
    for position, i in enumerate(todo):
        for j, choice in enumerate(choice_lists[i]):
            requests.append((prompts[i], spec.target_delimiter + choice))
            owner.append((position, j))
    pending: dict[int, dict[int, Loglikelihood]] = {}
    for indices, results in runner.loglikelihood(requests, batch_size=suite.generation.batch_size):
        rows: list[Row] = []
        for request, result in zip(indices, results, strict=True):
            position, j = owner[request]
            example = todo[position]
            choices = choice_lists[example]
            if result.n_tokens == 0:
                raise InputError(
                    f"dataset {spec.name!r}, example {loaded.keys[example]!r}: choice {choices[j]!r} was "
                    f"scored over zero tokens (an empty choice, or a context ending where the choice's "
                    f"first token begins: end the prompt before target_delimiter {spec.target_delimiter!r})"
                )
            scores = pending.setdefault(position, {})
            scores[j] = result
            if len(scores) == len(choices):
                del pending[position]
                best = max(range(len(choices)), key=lambda k: scores[k].logprob)
                extra = {
                    "logprobs": {choices[k]: scores[k].logprob for k in range(len(choices))},
                    "n_tokens": {choices[k]: scores[k].n_tokens for k in range(len(choices))},
                    "n_bytes": {choices[k]: len(choices[k].encode("utf-8")) for k in range(len(choices))},
                }
                rows.append((loaded.keys[example], choices[best], extra))
        if rows:
            yield rows


def _perplexity_rows(
    runner: Runner, suite: Suite, loaded: LoadedDataset, todo: list[int]
) -> Iterator[list[Row]]:
    texts = loaded.texts()
    batches = runner.rolling_loglikelihood(
        [texts[i] for i in todo], batch_size=suite.generation.batch_size, stride=loaded.spec.stride
    )
    for indices, results in batches:
        yield [
            (loaded.keys[todo[i]], None, {"logprob": r.logprob, "n_tokens": r.n_tokens, "n_bytes": r.n_bytes})
            for i, r in zip(indices, results, strict=True)
        ]


TASK_RUNNERS = ("default", "dask")


def check_task_runner(name: str, dask_address: str | None) -> None:
    """InputError for an unknown task runner, or a Dask address without the Dask runner."""
    if name not in TASK_RUNNERS:
        raise InputError(f"task runner {name!r}: expected one of {', '.join(TASK_RUNNERS)}")
    if dask_address and name != "dask":
        raise InputError("a Dask address needs the dask task runner (--task-runner dask)")


def shard_range(n_examples: int, index: int, count: int) -> range:
    """The examples of shard ``index`` of ``count``: contiguous blocks whose sizes differ by one at most."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return range(n_examples * index // count, n_examples * (index + 1) // count)


def run_model(
    checkpoint: CheckpointInfo,
    suite: Suite,
    dataset: DatasetRef,
    *,
    database_url: str | None = None,
    shard: tuple[int, int] | None = None,
) -> list[str]:
    """Model outputs for every example not yet stored, written batch by batch; returns run warnings.

    Whatever is stored already is not computed again: a second run costs no model call, and a run
    killed mid-dataset resumes after the last stored batch. ``shard`` (index, count) limits the work to
    one block of the examples, so shards can run on several workers; outputs are stored by example key,
    so scoring reads them back in example order however they were computed.
    """
    settings = get_settings()
    spec = dataset.spec
    loaded = load(spec)
    chash = config_hash(suite, spec, checkpoint)

    def stored_keys() -> set[str]:
        with session_scope(database_url) as session:
            return repo.cached_keys(session, checkpoint.fingerprint, dataset.fingerprint, chash)

    done = retry_transient(stored_keys, f"reading stored outputs of {spec.name}")
    positions = range(len(loaded.keys)) if shard is None else shard_range(len(loaded.keys), *shard)
    todo = [i for i in positions if loaded.keys[i] not in done]
    if not todo:
        log.info("dataset %s: all %d outputs cached", spec.name, len(positions))
        return []
    runner = get_runner(checkpoint, settings.device, settings.dtype, suite.bos)
    warnings_before = len(runner.warnings)
    if spec.kind == "perplexity":
        produce, verb = _perplexity_rows, "scoring text"
    elif spec.scoring == "loglikelihood":
        produce, verb = _choice_rows, "scoring choices"
    else:
        produce, verb = _generated_rows, "generating"
    with progress.job(f"{spec.name}: {verb}", len(todo)) as bar:
        for rows in produce(runner, suite, loaded, todo):
            _store_batch(checkpoint.fingerprint, dataset.fingerprint, chash, rows, database_url)
            progress.advance(bar, len(rows))
    return [f"{spec.name}: {w}" for w in runner.warnings[warnings_before:]]


def _store_batch(
    checkpoint_fp: str, dataset_fp: str, chash: str, rows: list[Row], database_url: str | None
) -> None:
    """One batch of outputs, in one transaction; retried over a database blip (stored rows are skipped)."""

    def write() -> None:
        with session_scope(database_url) as session:
            repo.add_predictions(session, checkpoint_fp, dataset_fp, chash, rows)

    retry_transient(write, "storing a batch of model outputs")


def score(
    checkpoint: CheckpointInfo, suite: Suite, dataset: DatasetRef, *, database_url: str | None = None
) -> DatasetOutcome:
    """Every metric of the dataset, from the stored outputs."""
    spec = dataset.spec
    loaded = load(spec)
    chash = config_hash(suite, spec, checkpoint)

    def read() -> dict[str, repo.StoredOutput]:
        with session_scope(database_url) as session:
            return repo.cached_outputs(session, checkpoint.fingerprint, dataset.fingerprint, chash)

    stored = retry_transient(read, f"reading the outputs of {spec.name}")
    missing = [key for key in loaded.keys if key not in stored]
    if missing:
        raise RunnerError(f"dataset {spec.name!r}: {len(missing)} outputs missing (e.g. {missing[:3]})")
    rows = [stored[key] for key in loaded.keys]
    extras = [row.extra for row in rows]
    scored_text = spec.kind == "perplexity"
    choice = spec.scoring == "loglikelihood"
    choice_lists = loaded.choice_lists() if choice else None
    inputs = EvalInputs(
        predictions=[row.output or "" for row in rows],
        references=loaded.gold_choices() if choice else loaded.references,
        labels=spec.labels,
        rows=loaded.rows,
        logprob_sums=[float(e["logprob"]) for e in extras] if scored_text else None,
        token_counts=[int(e["n_tokens"]) for e in extras] if scored_text else None,
        byte_counts=[int(e["n_bytes"]) for e in extras] if scored_text else None,
        choices=choice_lists,
        choice_logprobs=None
        if choice_lists is None
        else [[float(e["logprobs"][c]) for c in cs] for e, cs in zip(extras, choice_lists, strict=True)],
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
    results, details = [], []
    for metric in spec.bound_metrics():
        result = metric.compute(inputs)
        signature = result.signature + provenance
        if metric.info.is_report:
            details.append(RunDetailResult(result.name, result.n, signature, result.details))
        else:
            results.append(dataclasses.replace(result, signature=signature))
    return DatasetOutcome(dataset=dataset, keys=loaded.keys, results=results, details=details)


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


def persist(
    run_id: str,
    outcomes: Sequence[DatasetOutcome],
    warnings: Sequence[str] = (),
    *,
    health: HealthReport | None = None,
    forgetting: ForgettingReport | None = None,
    database_url: str | None = None,
    claim_id: str | None = None,
) -> None:
    """One transaction: datasets, metrics, per-example scores, health reports, loss curve, succeeded.

    Only while the run is still held by ``claim_id`` (RunTakenOver otherwise); a retry after a commit
    whose acknowledgement was lost finds the run succeeded under the same claim and writes nothing.
    """
    retry_transient(
        lambda: _persist_once(run_id, outcomes, warnings, health, forgetting, database_url, claim_id),
        "storing the run's results",
    )


def _persist_once(
    run_id: str,
    outcomes: Sequence[DatasetOutcome],
    warnings: Sequence[str],
    health: HealthReport | None,
    forgetting: ForgettingReport | None,
    database_url: str | None,
    claim_id: str | None,
) -> None:
    with session_scope(database_url) as session:
        if not repo.hold_for_persist(session, run_id, claim_id):
            return
        for outcome in outcomes:
            ref = outcome.dataset
            row = repo.upsert_dataset(
                session, ref.spec.name, ref.fingerprint, ref.row_count, str(ref.spec.path)
            )
            repo.save_results(session, run_id, row.id, outcome.keys, outcome.results)
            repo.save_details(session, run_id, row.id, outcome.details)
        if health is not None:
            curve = health.details.get("loss_curve", [])
            checkpoint_id = session.get_one(EvalRun, run_id).checkpoint_id
            repo.save_loss_points(
                session, checkpoint_id, [(p["step"], p["split"], p["value"]) for p in curve]
            )
            details = {k: v for k, v in health.as_dict().items() if k not in ("verdict", "reason")}
            details["details"] = {k: v for k, v in health.details.items() if k != "loss_curve"}
            repo.save_health(session, run_id, "overfitting", health.verdict, health.reason, details)
        if forgetting is not None:
            repo.save_health(
                session,
                run_id,
                "forgetting",
                forgetting.verdict,
                forgetting.reason,
                {"changes": forgetting.as_dict()["changes"]},
            )
        repo.mark_succeeded(session, run_id, warnings)


def gate(run_id: str, suite: Suite, *, database_url: str | None = None) -> tuple[str, str, Comparison | None]:
    """Compare the run with its baseline and apply the suite's gates; stores and returns the outcome.

    Returns (status, summary, comparison): status is ``passed``, ``failed``, ``no_baseline``, or
    ``incomparable`` when the baseline evaluated other data (the summary says what differs).
    """
    baseline = baseline_for(run_id, database_url=database_url)
    comparison = None
    if baseline is None:
        status, summary = "no_baseline", "no earlier run of this model and suite to compare with"
    else:
        try:
            comparison = compare_runs(
                baseline,
                run_id,
                gates=suite.gates,
                seed=suite.seed,
                n_resamples=suite.bootstrap_resamples,
                database_url=database_url,
            )
        except InputError as exc:
            status, summary = "incomparable", f"baseline {baseline[:12]}: {exc}"
        else:
            status = "failed" if comparison.regressions else "passed"
            summary = f"against {baseline[:12]}: {comparison.summary()}"

    def record() -> None:
        with session_scope(database_url) as session:
            repo.set_gate(session, run_id, baseline, status, summary)

    retry_transient(record, "recording the gate outcome")
    return status, summary, comparison


def fail(run_id: str, error: str, *, database_url: str | None = None, claim_id: str | None = None) -> bool:
    """Mark the run failed with ``error`` (cut to one short line) if this delivery still holds it.

    Returns whether it did: a run that succeeded or was taken over is never marked failed by a late
    retry. Nothing of a failed run looks like a succeeded run afterwards.
    """
    message = error if len(error) <= ERROR_LIMIT else error[: ERROR_LIMIT - 15] + " ...(truncated)"

    def write() -> bool:
        with session_scope(database_url) as session:
            return repo.mark_failed(session, run_id, message, claim_id)

    return retry_transient(write, "marking the run failed")
