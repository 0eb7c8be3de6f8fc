"""Time the Hugging Face runner and the whole flow on a tiny local GPT-2 (built here, no hub).

Run with ``python benchmarks/bench_runner.py``. Prints examples/s and tokens/s for generation and
perplexity at batch size 1 and "auto", the flow's first and cached run, and the flow's overhead over the
same work done without Prefect. Every figure is the median of ``--repeats`` runs after one warm-up run;
the model is loaded once beforehand and shared by every side. No timing is asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
import yaml

from evaluators import EvalInputs
from posteval import pipeline
from posteval.checkpoint import resolve_checkpoint
from posteval.db.migrate import upgrade
from posteval.runners import get_runner
from posteval.runners.base import AUTO_BATCH_START, Batch, GenerationOptions
from posteval.runners.hf import HFRunner
from posteval.settings import get_settings
from posteval.suite import LoadedSuite, load_suite
from posteval.toymodel import EXAMPLES_DIR, build_base_model, finetune, load_jsonl

T = TypeVar("T")
CHECKPOINT_CACHE = Path(tempfile.gettempdir()) / "posteval-bench-checkpoint"


def tiny_checkpoint() -> Path:
    """The benchmark's fine-tuned checkpoint, built once and reused from the temp folder."""
    tuned = CHECKPOINT_CACHE / "ft-120-steps"  # fewer steps leave a model that only says "\n"
    if not (tuned / "trainer_state.json").exists():  # written last: a complete checkpoint
        finetune(build_base_model(CHECKPOINT_CACHE / "base"), tuned, max_steps=120)
    return tuned


def write_suite(root: Path, n_prompts: int, n_texts: int, max_new_tokens: int) -> Path:
    """A suite with one generated dataset (held-out clauses cycled) and one perplexity dataset."""
    clauses, general = load_jsonl(EXAMPLES_DIR / "heldout.jsonl"), load_jsonl(EXAMPLES_DIR / "general.jsonl")
    rows = {
        "clauses.jsonl": [{**clauses[i % len(clauses)], "id": f"c{i}"} for i in range(n_prompts)],
        "general.jsonl": [{"id": f"g{i}", "text": general[i % len(general)]["text"]} for i in range(n_texts)],
    }
    for name, items in rows.items():
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in items), encoding="utf-8")
    suite = {
        "name": "bench",
        "generation": {"max_new_tokens": max_new_tokens, "stop": ["\n"], "batch_size": "auto"},
        "datasets": [
            {
                "name": "clauses",
                "path": "clauses.jsonl",
                "prompt": "Clause: {text}\nType:",
                "reference": "label",
                "key": "id",
                "labels": ["lease", "nda", "employment"],
                "metrics": ["accuracy", "exact_match"],
            },
            {
                "name": "general",
                "path": "general.jsonl",
                "kind": "perplexity",
                "key": "id",
                "metrics": ["perplexity", "bits_per_byte"],
            },
        ],
        "training_health": {},  # the overfitting check from trainer_state.json: no extra model work
    }
    (root / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return root / "suite.yaml"


def collect(batches: Iterator[Batch[T]], n: int) -> list[T]:
    """The results of a runner call, back in input order."""
    out: list[Any] = [None] * n
    for indices, results in batches:
        for i, result in zip(indices, results, strict=True):
            out[i] = result
    return out


def median_time(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Median wall time of ``repeats`` calls of ``fn`` after one untimed warm-up call, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def fresh_database(root: Path, counter: list[int]) -> str:
    """A new, migrated SQLite database under ``root`` (migration time is not part of any figure)."""
    counter[0] += 1
    url = f"sqlite:///{root / f'bench-{counter[0]}.db'}"
    upgrade(url)
    return url


def direct_pipeline(checkpoint: str, suite_path: Path, url: str) -> None:
    """The flow's stages as plain calls, in the flow's order, without Prefect (no base model here)."""
    info = resolve_checkpoint(checkpoint)
    loaded = load_suite(suite_path)
    refs = [pipeline.prepare_dataset(spec) for spec in loaded.suite.all_datasets()]
    run = pipeline.register_run(info, loaded, refs, trigger="manual", database_url=url)
    warnings = [w for ref in refs for w in pipeline.run_model(info, loaded.suite, ref, database_url=url)]
    outcomes = [pipeline.score(info, loaded.suite, ref, database_url=url) for ref in refs]
    health = pipeline.assess_health(info, loaded.suite, outcomes)
    pipeline.persist(run.run_id, outcomes, warnings, health=health, database_url=url)


def runner_and_metrics(runner: HFRunner, loaded: LoadedSuite) -> None:
    """Only the model calls and the metrics (rows already in memory, no database)."""
    suite = loaded.suite
    options = GenerationOptions(suite.generation.max_new_tokens, tuple(suite.generation.stop))
    for spec in suite.datasets:
        data = pipeline.load(spec)
        if spec.kind == "perplexity":
            scored = collect(runner.rolling_loglikelihood(data.texts(), batch_size="auto"), len(data))
            inputs = EvalInputs(
                predictions=[""] * len(data),
                logprob_sums=[s.logprob for s in scored],
                token_counts=[s.n_tokens for s in scored],
                byte_counts=[s.n_bytes for s in scored],
                seed=suite.seed,
                n_bootstrap=suite.bootstrap_resamples,
            )
        else:
            outputs = collect(runner.generate(data.prompts(), options, batch_size="auto"), len(data))
            inputs = EvalInputs(
                outputs,
                data.references,
                spec.labels,
                data.rows,
                seed=suite.seed,
                n_bootstrap=suite.bootstrap_resamples,
            )
        for metric in spec.bound_metrics():
            metric.compute(inputs)


def runner_rows(
    runner: HFRunner, prompts: list[str], texts: list[str], max_new_tokens: int, repeats: int
) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """Generation and rolling perplexity straight through the runner, at batch size 1 and "auto"."""
    options = GenerationOptions(max_new_tokens, ("\n",))
    rows, figures = [], {}
    for size in (1, "auto"):
        seconds, outputs = median_time(
            repeats, lambda s=size: collect(runner.generate(prompts, options, batch_size=s), len(prompts))
        )
        n_new = sum(len(runner.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
        measured = [("generate", "examples", len(prompts), n_new, seconds)]
        seconds, scored = median_time(
            repeats, lambda s=size: collect(runner.rolling_loglikelihood(texts, batch_size=s), len(texts))
        )
        measured.append(("perplexity", "texts", len(texts), sum(r.n_tokens for r in scored), seconds))
        for kind, unit, n, tokens, seconds in measured:
            figures[f"{kind}_bs{size}_{unit}_per_s"] = n / seconds
            figures[f"{kind}_bs{size}_tokens_per_s"] = tokens / seconds
            label = f"{kind} bs={size}" + (f" (from {AUTO_BATCH_START})" if size == "auto" else "")
            rate = f"{n / seconds:8.1f} {unit}/s {tokens / seconds:9.1f} tokens/s"
            rows.append((label, f"{rate}  ({n} {unit}, {tokens} tokens, {seconds:.2f} s)"))
    return rows, figures


def flow_figures(
    root: Path, checkpoint: str, suite_path: Path, runner: HFRunner, repeats: int
) -> dict[str, float]:
    """The flow's first and cached runs, the same stages without Prefect, and runner + metrics alone."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.post_training import evaluate_checkpoint

    loaded, databases, flow_url = load_suite(suite_path), [0], [""]

    def flow_first() -> None:
        flow_url[0] = fresh_database(root, databases)
        pipeline._load_cached.cache_clear()  # each side loads its datasets itself
        evaluate_checkpoint(checkpoint=checkpoint, suite=str(suite_path), database_url=flow_url[0])

    def flow_cached() -> None:  # a new run row; every output comes from the first run's database cache
        evaluate_checkpoint(
            checkpoint=checkpoint, suite=str(suite_path), force=True, database_url=flow_url[0]
        )

    def direct() -> None:
        url = fresh_database(root, databases)
        pipeline._load_cached.cache_clear()
        direct_pipeline(checkpoint, suite_path, url)

    started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        figures = {"harness_startup_s": time.perf_counter() - started}
        figures["flow_first_s"] = median_time(repeats, flow_first)[0]
        before = get_runner.cache_info().hits
        figures["flow_cached_s"] = median_time(repeats, flow_cached)[0]
        figures["cached_runner_lookups"] = get_runner.cache_info().hits - before
    figures["stages_no_prefect_s"] = median_time(repeats, direct)[0]
    figures["runner_and_metrics_s"] = median_time(repeats, lambda: runner_and_metrics(runner, loaded))[0]
    return figures


def main() -> None:
    """Print the figures (and write them as JSON with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=256, help="generation prompts")
    parser.add_argument("--texts", type=int, default=300, help="perplexity texts")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="posteval-bench-"))
    os.environ["POSTEVAL_HOME"] = str(root / "home")
    get_settings.cache_clear()
    settings = get_settings()
    checkpoint = str(tiny_checkpoint())
    suite_path = write_suite(root, args.examples, args.texts, args.max_new_tokens)
    gen, ppl = (pipeline.load(spec) for spec in load_suite(suite_path).suite.datasets)
    started = time.perf_counter()
    # get_runner's cache: the flow's tasks and the direct stages reuse this loaded model, so no side loads it.
    runner = cast(HFRunner, get_runner(resolve_checkpoint(checkpoint), settings.device, settings.dtype))
    load_s = time.perf_counter() - started

    rows, figures = runner_rows(runner, gen.prompts(), ppl.texts(), args.max_new_tokens, args.repeats)
    figures |= flow_figures(root, checkpoint, suite_path, runner, args.repeats) | {"model_load_s": load_s}
    flow_s, direct_s, raw_s = (
        figures[k] for k in ("flow_first_s", "stages_no_prefect_s", "runner_and_metrics_s")
    )
    rows += [
        ("flow, first run (fresh db)", f"{flow_s:8.2f} s"),
        (
            "flow, cached re-run (force=True)",
            f"{figures['flow_cached_s']:8.2f} s  (runner lookups: {figures['cached_runner_lookups']:.0f})",
        ),
        ("stages without Prefect (fresh db)", f"{direct_s:8.2f} s"),
        ("runner + metrics only (no db)", f"{raw_s:8.2f} s"),
        ("overhead: flow / stages - 1", f"{100 * (flow_s / direct_s - 1):+8.1f} %"),
        ("overhead: flow / runner+metrics - 1", f"{100 * (flow_s / raw_s - 1):+8.1f} %"),
        ("model load (once, in no row above)", f"{load_s:8.2f} s"),
        ("Prefect harness start (once)", f"{figures['harness_startup_s']:8.2f} s"),
    ]
    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"device {runner.device}, {runner.dtype}; median of {args.repeats} runs after a warm-up"
    )
    for name, value in rows:
        print(f"{name:<36} {value}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
