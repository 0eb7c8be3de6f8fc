"""Text-generation overlap metrics: BLEU and chrF (sacrebleu, corpus level) and ROUGE (rouge-score).

A reference may be one string or a list of strings (several references for one example). BLEU and chrF
values are sacrebleu's corpus scores (0-100); their per-example scores are sacrebleu's sentence scores, for
inspection only. Their CIs recompute the corpus score on every resample from resampled per-segment
statistics. ROUGE is the mean of rouge-score's per-example scores (0-1), with a bootstrap CI of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from posteval.evaluators.base import EvalInputs, register_aggregator, register_metric
from posteval.evaluators.common import (
    corpus_result,
    decomposable_result,
    reference_strings,
    require_references,
)
from posteval.results import MetricResult

if TYPE_CHECKING:  # sacrebleu is imported where a metric is computed: loading a suite needs only the names
    from sacrebleu.metrics.base import Metric

# Tokenizers that need no extra package (ja-mecab, ko-mecab and the spm ones do).
Tokenizer = Literal["13a", "intl", "char", "zh", "none"]
Smoothing = Literal["exp", "floor", "add-k", "none"]
RougeScore = Literal["fmeasure", "precision", "recall"]
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def reference_streams(references: Sequence[Any]) -> list[list[str | None]]:
    """sacrebleu's reference layout: stream j holds each example's j-th reference, or None."""
    per_example = [reference_strings(r) for r in references]
    width = max((len(refs) for refs in per_example), default=1)
    return [[refs[j] if j < len(refs) else None for refs in per_example] for j in range(width)]


def _corpus_metric(metric: str, settings: dict[str, Any]) -> Metric:
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(**settings) if metric == "bleu" else CHRF(**settings)


@register_aggregator("sacrebleu")
def sacrebleu_score(sums: np.ndarray, *, metric: str, settings: dict[str, Any]) -> np.ndarray:
    """Summed per-segment sacrebleu statistics (n-gram matches and totals, lengths) to the corpus score."""
    corpus = _corpus_metric(metric, settings)
    rows = np.rint(sums).astype(np.int64).tolist()
    return np.array([corpus._compute_score_from_stats(row).score for row in rows], dtype=np.float64)


def _sacrebleu_result(
    name: str,
    corpus: Metric,
    sentence: Metric,
    inputs: EvalInputs,
    options: dict[str, Any],
) -> MetricResult:
    """Corpus score by ``corpus`` with a recomputing bootstrap CI; sentence scores by ``sentence``."""
    references = require_references(inputs, name)
    hypotheses = [str(p) for p in inputs.predictions]
    segments: list[list[int]] = []
    value = float("nan")
    if hypotheses:
        # The same two steps as sacrebleu's corpus_score, keeping the per-segment statistics.
        streams: Any = reference_streams(references)  # sacrebleu takes None for a missing reference
        segments = corpus._extract_corpus_statistics(hypotheses, streams)
        value = corpus._aggregate_and_compute(segments).score
    stats = np.asarray(segments, dtype=np.float64) if segments else np.zeros((0, 1))
    return corpus_result(
        name,
        value,
        inputs,
        stats=stats,
        aggregation={"fn": "sacrebleu", "metric": name, "settings": options},
        higher_is_better=True,
        options=options,
        libraries=["sacrebleu"],
        per_example=[sentence._compute_score_from_stats(list(row)).score for row in segments],
        details={"sacrebleu_signature": corpus.get_signature().format()} if hypotheses else {},
    )


@register_metric("bleu", higher_is_better=True)
def bleu(
    inputs: EvalInputs,
    *,
    tokenize: Tokenizer = "13a",
    lowercase: bool = False,
    smooth_method: Smoothing = "exp",
    smooth_value: float | None = None,
) -> MetricResult:
    """sacrebleu's corpus BLEU (0-100); per-example scores are sentence BLEU with effective order."""
    settings: dict[str, Any] = {
        "tokenize": tokenize,
        "lowercase": lowercase,
        "smooth_method": smooth_method,
        "smooth_value": smooth_value,
    }
    from sacrebleu.metrics import BLEU

    corpus = BLEU(**settings)
    sentence = BLEU(**settings, effective_order=True)
    return _sacrebleu_result("bleu", corpus, sentence, inputs, settings)


@register_metric("chrf", higher_is_better=True)
def chrf(
    inputs: EvalInputs,
    *,
    char_order: int = 6,
    word_order: int = 0,
    beta: int = 2,
    lowercase: bool = False,
    whitespace: bool = False,
    eps_smoothing: bool = False,
) -> MetricResult:
    """sacrebleu's corpus chrF (0-100; chrF++ with ``word_order: 2``); per-example: sentence chrF."""
    settings: dict[str, Any] = {
        "char_order": char_order,
        "word_order": word_order,
        "beta": beta,
        "lowercase": lowercase,
        "whitespace": whitespace,
        "eps_smoothing": eps_smoothing,
    }
    from sacrebleu.metrics import CHRF

    metric = CHRF(**settings)
    return _sacrebleu_result("chrf", metric, metric, inputs, settings)


def rouge_scores(
    predictions: Sequence[str], references: Sequence[Any], rouge_type: str, *, use_stemmer: bool
) -> list[Any]:
    """rouge-score's Score (precision, recall, fmeasure) per example; several references take the best."""
    from rouge_score import rouge_scorer  # lazy: nltk takes a second to import

    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=use_stemmer)
    scores = []
    for prediction, reference in zip(predictions, references, strict=True):
        targets = reference_strings(reference)
        result = (
            scorer.score(targets[0], prediction)
            if len(targets) == 1
            else scorer.score_multi(targets, prediction)
        )
        scores.append(result[rouge_type])
    return scores


def _register_rouge(rouge_type: str) -> None:
    def metric(
        inputs: EvalInputs, *, use_stemmer: bool = False, score: RougeScore = "fmeasure"
    ) -> MetricResult:
        references = require_references(inputs, rouge_type)
        scores = rouge_scores(inputs.predictions, references, rouge_type, use_stemmer=use_stemmer)
        means = {
            part: float(np.mean([getattr(s, part) for s in scores])) if scores else float("nan")
            for part in ("precision", "recall", "fmeasure")
        }
        return decomposable_result(
            rouge_type,
            [getattr(s, score) for s in scores],
            inputs,
            higher_is_better=True,
            options={"use_stemmer": use_stemmer, "score": score},
            libraries=["rouge-score"],
            details=means,
        )

    metric.__name__ = metric.__qualname__ = rouge_type
    metric.__doc__ = (
        f"Mean per-example {rouge_type} (F-measure by default) by rouge-score. Its default tokenizer keeps "
        "only ASCII letters and digits, so text in other scripts scores 0."
    )
    register_metric(rouge_type, higher_is_better=True)(metric)


for _rouge_type in ROUGE_TYPES:
    _register_rouge(_rouge_type)
