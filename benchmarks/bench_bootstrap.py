"""Time the bootstrap CIs: 1,000 resamples over 10,000 examples for accuracy, macro F1 and BLEU.

Run with ``python benchmarks/bench_bootstrap.py``. Each line gives the whole metric (library value,
per-example scores and CI) and the CI alone, the best of ``--repeat`` runs. No timing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from functools import partial

from posteval.evaluators import EvalInputs, resolve_metric

_WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "table",
    "quickly",
    "slowly",
    "red",
    "blue",
    "big",
    "small",
    "and",
    "then",
]
_LABELS = ["positive", "negative", "neutral", "mixed"]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 25)))


def _perturb(rng: random.Random, text: str) -> str:
    words = text.split()
    return " ".join(w if rng.random() < 0.7 else rng.choice(_WORDS) for w in words)


def _best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    """Print the timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(0)
    references = [_sentence(rng) for _ in range(args.examples)]
    hypotheses = [_perturb(rng, r) for r in references]
    gold = [rng.choice(_LABELS) for _ in range(args.examples)]
    guessed = [g if rng.random() < 0.7 else rng.choice([*_LABELS, "unsure"]) for g in gold]

    cases = {
        "accuracy": (EvalInputs(guessed, gold, _LABELS, n_bootstrap=args.resamples), "accuracy"),
        "f1 (macro)": (EvalInputs(guessed, gold, _LABELS, n_bootstrap=args.resamples), "f1"),
        "bleu": (EvalInputs(hypotheses, references, n_bootstrap=args.resamples), "bleu"),
    }
    print(
        f"{args.resamples} resamples over {args.examples} examples, "
        f"{os.cpu_count()} CPUs, best of {args.repeat}"
    )
    print(f"{'metric':<12} {'with CI':>9} {'no CI':>9} {'CI only':>9}  value [95% CI]")
    for label, (inputs, name) in cases.items():
        metric = resolve_metric(name)
        without_ci = EvalInputs(**{**inputs.__dict__, "n_bootstrap": 0})
        with_ci_s = _best_of(args.repeat, partial(metric.compute, inputs))
        no_ci_s = _best_of(args.repeat, partial(metric.compute, without_ci))
        result = metric.compute(inputs)
        print(
            f"{label:<12} {with_ci_s:>8.3f}s {no_ci_s:>8.3f}s {with_ci_s - no_ci_s:>8.3f}s  "
            f"{result.value:.4f} [{result.ci_low:.4f}, {result.ci_high:.4f}]"
        )


if __name__ == "__main__":
    main()
