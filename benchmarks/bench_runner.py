"""Time the Hugging Face runner and the whole flow on a tiny local GPT-2 (built here, no hub).

Run with ``python benchmarks/bench_runner.py``. Prints examples/s and tokens/s for generation and
perplexity at batch size 1 and "auto", the flow's first and cached runs, and the flow's overhead over the
same work done without Prefect. Each figure is the best of ``--repeats`` runs after one warm-up run
(best, not median: a shared CPU adds outliers several times the run); flow and direct runs alternate.
The model is loaded once beforehand and shared by every side; database migrations and the Prefect
harness start are never inside a timed run. No timing is asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import argparse
import atexit
import itertools
import json
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

from posteval import pipeline
from posteval.db.migrate import upgrade
from posteval.evaluators import EvalInputs
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.suite import LoadedSuite, load_suite
from posteval.pipeline import datasets as pipeline_datasets
from posteval.runners import get_runner
from posteval.runners.base import AUTO_BATCH_START, Batch, GenerationOptions
from posteval.runners.hf import HFRunner
from posteval.settings import get_settings
from posteval.toymodel import EXAMPLES_DIR, build_base_model, finetune, load_jsonl

T = TypeVar("T")
CHECKPOINT_CACHE = Path(tempfile.gettempdir()) / "posteval-bench-checkpoint"
SUITE = """\
name: bench
generation: {{max_new_tokens: {max_new_tokens}, stop: {stop}, batch_size: auto}}
training_health: {{}}  # the overfitting verdict from trainer_state.json alone: no model work
datasets:
  - {{name: clauses, path: clauses.jsonl, prompt: "Clause: {{text}}\\nType:", reference: label, key: id,
     labels: [lease, nda, employment], metrics: [accuracy, exact_match]}}
  - {{name: general, path: general.jsonl, kind: perplexity, key: id, metrics: [perplexity, bits_per_byte]}}
"""


def tiny_checkpoint() -> Path:
    """The benchmark's fine-tuned checkpoint, built once (~10 s) and reused from the temp folder."""
    tuned = CHECKPOINT_CACHE / "ft-120-steps"  # after fewer steps the model answers every prompt with "\n"
    if not (tuned / "trainer_state.json").exists():  # written last: a complete checkpoint
        finetune(build_base_model(CHECKPOINT_CACHE / "base"), tuned, max_steps=120)
    return tuned


def write_suite(root: Path, n_prompts: int, n_texts: int, options: GenerationOptions) -> Path:
    """A suite with one generated dataset (held-out clauses, cycled) and one perplexity dataset."""
    clauses, general = load_jsonl(EXAMPLES_DIR / "heldout.jsonl"), load_jsonl(EXAMPLES_DIR / "general.jsonl")
    rows = {
        "clauses.jsonl": [{**clauses[i % len(clauses)], "id": f"c{i}"} for i in range(n_prompts)],
        "general.jsonl": [{"id": f"g{i}", "text": general[i % len(general)]["text"]} for i in range(n_texts)],
    }
    for name, items in rows.items():
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in items), encoding="utf-8")
    (root / "suite.yaml").write_text(
        SUITE.format(max_new_tokens=options.max_new_tokens, stop=json.dumps(options.stop)), encoding="utf-8"
    )
    return root / "suite.yaml"


def collect(batches: Iterator[Batch[T]], n: int) -> list[T]:
    """The results of a runner call, back in input order."""
    out: list[Any] = [None] * n
    for indices, results in batches:
        for i, result in zip(indices, results, strict=True):
            out[i] = result
    return out


def direct_pipeline(checkpoint: str, suite_path: Path, url: str) -> None:
    """The flow's stages as plain calls in the flow's order (no base model here), without Prefect.

    Keep in step with flows/post_training.py, or the overhead figure compares different work.
    """
    info = resolve_checkpoint(checkpoint)
    loaded = load_suite(suite_path)
    refs = [pipeline.prepare_dataset(spec) for spec in loaded.suite.all_datasets()]
    run = pipeline.register_run(info, loaded, refs, trigger="manual", database_url=url)
    warnings = [w for ref in refs for w in pipeline.run_model(info, loaded.suite, ref, database_url=url)]
    outcomes = [pipeline.score(info, loaded.suite, ref, database_url=url) for ref in refs]
    health = pipeline.assess_health(info, loaded.suite, outcomes)
    pipeline.persist(run.run_id, outcomes, warnings, health=health, database_url=url)
    pipeline.gate(run.run_id, loaded.suite, database_url=url)  # on a fresh database: no baseline


def runner_and_metrics(runner: HFRunner, loaded: LoadedSuite) -> None:
    """Only the model calls and the metrics: rows already in memory, no database."""
    suite = loaded.suite
    options = GenerationOptions(suite.generation.max_new_tokens, tuple(suite.generation.stop))
    seed, resamples = suite.seed, suite.bootstrap_resamples
    for spec in suite.datasets:
        data = pipeline.load(spec)
        if spec.kind == "perplexity":
            scored = collect(runner.rolling_loglikelihood(data.texts(), batch_size="auto"), len(data))
            inputs = EvalInputs(
                [""] * len(data),
                logprob_sums=[s.logprob for s in scored],
                token_counts=[s.n_tokens for s in scored],
                byte_counts=[s.n_bytes for s in scored],
                seed=seed,
                n_bootstrap=resamples,
            )
        else:
            outputs = collect(runner.generate(data.prompts(), options, batch_size="auto"), len(data))
            inputs = EvalInputs(
                outputs, data.references, spec.labels, data.rows, seed=seed, n_bootstrap=resamples
            )
        for metric in spec.bound_metrics():
            metric.compute(inputs)


def runner_figures(
    runner: HFRunner, prompts: list[str], texts: list[str], options: GenerationOptions, repeats: int
) -> dict[str, float]:
    """Generation and rolling perplexity straight through the runner, at batch size 1 and "auto"."""
    calls: dict[str, Callable[[int | str], list[Any]]] = {
        "generate": lambda size: collect(runner.generate(prompts, options, batch_size=size), len(prompts)),
        "perplexity": lambda size: collect(runner.rolling_loglikelihood(texts, batch_size=size), len(texts)),
    }
    figures = {}
    for (kind, call), size in itertools.product(calls.items(), (1, "auto")):
        times, results = [], call(size)  # the first call is the warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            results = call(size)
            times.append(time.perf_counter() - started)
        if kind == "generate":  # tokens of the outputs, stop sequence removed
            tokens = sum(len(runner.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in results)
        else:
            tokens = sum(result.n_tokens for result in results)
        figures[f"{kind}_bs_{size}_per_s"] = len(results) / min(times)
        figures[f"{kind}_bs_{size}_tokens_per_s"] = tokens / min(times)
    return figures


def flow_figures(
    root: Path, checkpoint: str, suite_path: Path, runner: HFRunner, repeats: int
) -> dict[str, Any]:
    """The flow's first and cached runs, the same stages without Prefect, and runner + metrics alone."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from posteval.flows.post_training import evaluate_checkpoint

    loaded, urls = load_suite(suite_path), (f"sqlite:///{root / f'bench-{i}.db'}" for i in itertools.count())
    times: dict[str, list[float]] = defaultdict(list)

    def fresh() -> str:  # a migrated database with nothing cached, and the datasets not loaded yet
        url = next(urls)
        upgrade(url)
        pipeline_datasets._load_cached.cache_clear()
        return url

    def flow(url: str, force: bool = False, heartbeats: bool = True) -> None:
        with temporary_settings({} if heartbeats else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            evaluate_checkpoint(checkpoint=checkpoint, suite=str(suite_path), force=force, database_url=url)

    def timed(name: str, fn: Callable[..., object], *args: Any) -> None:
        started = time.perf_counter()
        fn(*args)
        times[name].append(time.perf_counter() - started)

    started, model_calls = time.perf_counter(), 0
    with prefect_test_harness(server_startup_timeout=120):
        harness_s = time.perf_counter() - started
        for _ in range(repeats + 1):  # the first round is the warm-up
            timed("flow_first_s", flow, url := fresh())
            before = get_runner.cache_info().hits  # run_model asks for the runner only when it has work
            timed("flow_cached_s", flow, url, True)  # force: a new run row, every output from the cache
            model_calls += get_runner.cache_info().hits - before
            timed("stages_no_prefect_s", direct_pipeline, checkpoint, suite_path, fresh())
            timed("runner_and_metrics_s", runner_and_metrics, runner, loaded)
            timed("flow_no_heartbeat_s", flow, fresh(), False, False)
    samples = {name: values[1:] for name, values in times.items()}
    return {name: min(values) for name, values in samples.items()} | {
        "harness_startup_s": harness_s,
        "cached_rerun_model_calls": model_calls,
        "samples_s": samples,
    }


def main() -> None:
    """Print the figures (and write them as JSON with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=256, help="generation prompts")
    parser.add_argument("--texts", type=int, default=300, help="perplexity texts")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--no-stop", action="store_true", help='generate without the "\\n" stop sequence')
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp(prefix="posteval-bench-"))  # POSTEVAL_HOME, data, suite, databases
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    os.environ["POSTEVAL_HOME"] = str(root / "home")
    get_settings.cache_clear()
    settings = get_settings()
    checkpoint = str(tiny_checkpoint())
    options = GenerationOptions(args.max_new_tokens, () if args.no_stop else ("\n",))
    suite_path = write_suite(root, args.examples, args.texts, options)
    gen, ppl = (pipeline.load(spec) for spec in load_suite(suite_path).suite.datasets)
    started = time.perf_counter()
    # get_runner's cache: the flow's tasks and the direct stages reuse this model, so no side loads it.
    runner = cast(HFRunner, get_runner(resolve_checkpoint(checkpoint), settings.device, settings.dtype))
    figures: dict[str, Any] = {"model_load_s": time.perf_counter() - started}
    figures |= runner_figures(runner, gen.prompts(), ppl.texts(), options, args.repeats)
    figures |= flow_figures(root, checkpoint, suite_path, runner, args.repeats)

    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{runner.device} {runner.dtype}; best of {args.repeats} after a warm-up\n{args.examples} prompts "
        f"(max {args.max_new_tokens} new tokens, stop {list(options.stop)}), {args.texts} perplexity texts"
    )
    for kind, unit in (("generate", "examples"), ("perplexity", "texts")):
        for size in (1, "auto"):
            label = f"{kind}, batch size {size}" + (f" (from {AUTO_BATCH_START})" if size == "auto" else "")
            rate, tokens = figures[f"{kind}_bs_{size}_per_s"], figures[f"{kind}_bs_{size}_tokens_per_s"]
            print(f"{label:<40} {rate:9.1f} {unit}/s {tokens:10.1f} tokens/s")
    flow_s = figures["flow_first_s"]
    for name, label in (
        ("flow_first_s", "flow, first run, fresh db"),
        ("flow_cached_s", "flow, cached re-run (force=True)"),
        ("stages_no_prefect_s", "same stages, no Prefect, fresh db"),
        ("runner_and_metrics_s", "runner + metrics only, no db"),
        ("flow_no_heartbeat_s", "flow, first run, heartbeats off"),
    ):
        median, worst = statistics.median(figures["samples_s"][name]), max(figures["samples_s"][name])
        print(f"{label:<40} {figures[name]:9.2f} s  (median {median:.2f}, max {worst:.2f})")
    for name, label in (("stages_no_prefect_s", "stages"), ("runner_and_metrics_s", "runner + metrics")):
        percent, seconds = 100 * (flow_s / figures[name] - 1), flow_s - figures[name]
        print(f"{'overhead: flow vs ' + label:<40} {percent:+9.0f} %  ({seconds:+.2f} s)")
    print(f"{'model calls in cached re-runs':<40} {figures['cached_rerun_model_calls']:9d}")
    print(f"{'model load (once, outside every row)':<40} {figures['model_load_s']:9.2f} s")
    print(f"{'Prefect harness start (once)':<40} {figures['harness_startup_s']:9.2f} s")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
