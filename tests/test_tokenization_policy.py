"""One tokenization policy: multiple choice agrees with a plain transformers loop (lm-evaluation-harness's
convention) and with the OpenAI runner on the same checkpoint; a choice over zero tokens is an error."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tokenizers import processors
from transformers import AutoModelForCausalLM, AutoTokenizer

from posteval.db.engine import session_scope
from posteval.db.repo import cached_outputs
from posteval.errors import InputError
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.suite import load_suite
from posteval.pipeline import DatasetOutcome, config_hash, prepare_dataset, run_model, score
from posteval.runners.base import Loglikelihood, PrefixPolicy
from posteval.runners.hf import prefix_policy, tokenizer_prefix
from tests.helpers import PROMPT, write_jsonl
from tests.openai_server import OpenAIServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "contracts"
LABELS = ["lease", "nda", "employment"]
SUITE = """\
name: policy
allow_incomplete: true
bos: {bos}
generation: {{batch_size: 7}}
datasets:
  - name: choice
    path: items.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    scoring: loglikelihood
    metrics: [accuracy, accuracy_norm]
  - name: per-row
    path: per_row.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: gold
    choices: options
    scoring: loglikelihood
    metrics: [accuracy, accuracy_norm]
"""


def _rows() -> list[dict[str, Any]]:
    """180 three-way items: the held-out and validation clauses and the first 90 training clauses."""
    files = ("heldout.jsonl", "validation.jsonl", "train.jsonl")
    rows = [json.loads(line) for name in files for line in (EXAMPLES / name).read_text().splitlines()]
    return rows[:180]


def _per_row(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their own choices (two or three, in varying order) and the gold as an index or a string."""
    out = []
    for i, row in enumerate(rows[:30]):
        options = [LABELS[(i + k) % 3] for k in range(2 + i % 2)]
        if row["label"] not in options:
            options.append(row["label"])
        gold: int | str = options.index(row["label"]) if i % 2 else row["label"]
        out.append({"text": row["text"], "options": options, "gold": gold})
    return out


@torch.inference_mode()
def plain_choice_logprobs(checkpoint: Path, items: list[tuple[str, list[str]]]) -> list[list[float]]:
    """lm-evaluation-harness's loglikelihood by hand: encode context + continuation whole, split at the
    context's own tokens, no prefix token before a non-empty context, one unpadded forward pass each."""
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    out = []
    for context, choices in items:
        scores = []
        for choice in choices:
            whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
            ctx = tok(context, add_special_tokens=False)["input_ids"]
            cont = whole[len(ctx) :]
            ids = torch.tensor([[*ctx, *cont]])
            logprobs = F.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            picked = logprobs.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
            scores.append(float(picked[-len(cont) :].sum()))
        out.append(scores)
    return out


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda k: values[k])


def _expected(logprobs: list[list[float]], choices: list[list[str]], golds: list[str]) -> tuple[float, float]:
    """acc and acc_norm (log-prob per UTF-8 byte of the choice), as lm-evaluation-harness defines them."""
    acc = [choices[i][_argmax(lp)] == golds[i] for i, lp in enumerate(logprobs)]
    norm = [
        choices[i][_argmax([v / len(c.encode()) for v, c in zip(lp, choices[i], strict=True)])] == golds[i]
        for i, lp in enumerate(logprobs)
    ]
    return sum(acc) / len(acc), sum(norm) / len(norm)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policy")
    rows = _rows()
    write_jsonl(folder / "items.jsonl", rows)
    write_jsonl(folder / "per_row.jsonl", _per_row(rows))
    (folder / "suite.yaml").write_text(SUITE.format(bos="auto"))
    return folder


def _evaluate(spec: str, folder: Path, url: str) -> dict[str, tuple[DatasetOutcome, dict[str, Any]]]:
    """run_model then score on every dataset; the outcome and the stored outputs by example key."""
    loaded = load_suite(folder / "suite.yaml").suite
    checkpoint = resolve_checkpoint(spec)
    out = {}
    for dataset_spec in loaded.datasets:
        dataset = prepare_dataset(dataset_spec)
        run_model(checkpoint, loaded, dataset, database_url=url)
        with session_scope(url) as session:
            stored = cached_outputs(
                session,
                checkpoint.fingerprint,
                dataset.fingerprint,
                config_hash(loaded, dataset_spec, checkpoint),
            )
            extras = {key: value.extra for key, value in stored.items()}
        out[dataset_spec.name] = (score(checkpoint, loaded, dataset, database_url=url), extras)
    return out


def _check_against_plain_loop(results: dict[str, Any], checkpoint: Path, folder: Path, tol: float) -> None:
    rows = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]
    per_row = [json.loads(line) for line in (folder / "per_row.jsonl").read_text().splitlines()]
    cases = {
        "choice": ([LABELS] * len(rows), [r["label"] for r in rows], rows),
        "per-row": (
            [r["options"] for r in per_row],
            [r["options"][r["gold"]] if isinstance(r["gold"], int) else r["gold"] for r in per_row],
            per_row,
        ),
    }
    for name, (choices, golds, items) in cases.items():
        plain = plain_choice_logprobs(
            checkpoint, [(PROMPT.format(text=r["text"]), cs) for r, cs in zip(items, choices, strict=True)]
        )
        outcome, extras = results[name]
        for i, cs in enumerate(choices):
            stored = extras[str(i)]["logprobs"]
            assert [stored[c] for c in cs] == pytest.approx(plain[i], abs=tol, rel=0)
        acc, acc_norm = _expected(plain, choices, golds)
        values = {r.name: r.value for r in outcome.results}
        assert values == {"accuracy": acc, "accuracy_norm": acc_norm}


def test_multiple_choice_equals_a_plain_transformers_loop_without_a_prefix_token(
    base_checkpoint: Path, setup: Path, sqlite_url: str
) -> None:
    results = _evaluate(str(base_checkpoint), setup, sqlite_url)
    _check_against_plain_loop(results, base_checkpoint, setup, tol=1e-5)


@pytest.fixture(scope="module")
def served(base_checkpoint: Path) -> Iterator[OpenAIServer]:
    with OpenAIServer(base_checkpoint, model_name="policy-toy") as server:
        yield server


def test_the_openai_runner_on_the_same_checkpoint_agrees(
    base_checkpoint: Path, served: OpenAIServer, setup: Path, sqlite_url: str
) -> None:
    results = _evaluate(f"openai:policy-toy@{served.base_url}", setup, sqlite_url)
    _check_against_plain_loop(results, base_checkpoint, setup, tol=1e-5)


def test_no_prefix_token_is_added_where_the_tokenizer_adds_none(base_checkpoint: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_checkpoint)
    policy = prefix_policy(tokenizer, "auto")
    assert (tokenizer_prefix(tokenizer), policy.prefix("Clause:"), policy.prefix("")) == (
        [],
        [],
        [tokenizer.eos_token_id],  # an empty context (rolling's first window) gets bos, else eos
    )


def test_the_tokenizers_own_prefix_is_the_policy_prefix(base_checkpoint: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_checkpoint)
    bos = tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.eos_token_id)]
    )
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    policy = prefix_policy(reloaded, "auto")
    assert policy.prefix("Clause:") == [tokenizer.eos_token_id] == reloaded("x")["input_ids"][:1]
    assert prefix_policy(reloaded, "never").prefix("Clause:") == []


@pytest.mark.parametrize(
    ("mode", "own", "context", "expected"),
    [
        ("auto", [], "text", []),
        ("auto", [], "", [9]),
        ("auto", [1], "text", [1]),
        ("auto", [1], "", [1]),
        ("always", [], "text", [9]),
        ("always", [1], "text", [1]),
        ("never", [1], "text", []),
        ("never", [], "", []),
    ],
)
def test_the_policy_table(mode: Any, own: list[int], context: str, expected: list[int]) -> None:
    assert PrefixPolicy(mode=mode, own=own, bos=[9]).prefix(context) == expected


def test_a_changed_policy_is_a_new_config(base_checkpoint: Path, setup: Path, tmp_path: Path) -> None:
    checkpoint = resolve_checkpoint(base_checkpoint)
    hashes = {}
    for bos in ("auto", "always", "never"):
        (tmp_path / "suite.yaml").write_text(SUITE.format(bos=bos))
        for name in ("items.jsonl", "per_row.jsonl"):
            (tmp_path / name).write_text((setup / name).read_text())
        suite = load_suite(tmp_path / "suite.yaml").suite
        hashes[bos] = config_hash(suite, suite.datasets[0], checkpoint)
    assert len(set(hashes.values())) == 3


def test_bos_always_conditions_on_the_beginning_of_text_token(base_checkpoint: Path) -> None:
    from posteval.runners.hf import HFRunner

    runner = HFRunner(resolve_checkpoint(base_checkpoint), bos="always")
    context = PROMPT.format(text="The tenant shall pay the rent.")
    (_, [got]) = next(iter(runner.loglikelihood([(context, " lease")])))
    tok = runner.tokenizer
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(context + " lease", add_special_tokens=False)["input_ids"][len(ctx) :]
    ids = torch.tensor([[tok.eos_token_id, *ctx, *cont]])
    with torch.inference_mode():
        logprobs = F.log_softmax(runner.model(ids).logits[0, :-1].float(), dim=-1)
    expected = float(logprobs.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)[-len(cont) :].sum())
    assert got.logprob == pytest.approx(expected, abs=1e-5, rel=0)


class _ZeroTokenRunner:
    """A runner whose second choice of every request comes back scored over zero tokens."""

    name = "stub"

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def loglikelihood(self, requests: list[tuple[str, str]], *, batch_size: Any = "auto") -> Iterator[Any]:
        results = [
            Loglikelihood(logprob=0.0 if i % 3 == 1 else -5.0, n_tokens=0 if i % 3 == 1 else 2, n_bytes=3)
            for i in range(len(requests))
        ]
        yield list(range(len(requests))), results


def test_a_choice_scored_over_zero_tokens_is_an_error_naming_the_example(setup: Path) -> None:
    from posteval.pipeline.datasets import load
    from posteval.pipeline.outputs import _choice_rows

    suite = load_suite(setup / "suite.yaml").suite
    loaded = load(suite.datasets[0])
    with pytest.raises(InputError, match=r"dataset 'choice', example '0': choice 'nda' was scored over zero"):
        list(_choice_rows(_ZeroTokenRunner(), suite, loaded, [0, 1]))  # type: ignore[arg-type]


def test_accuracy_norm_divides_by_the_choice_byte_length() -> None:
    from posteval.evaluators import EvalInputs, resolve_metric

    # "a" is likelier in total (-2 > -4), "日本" per byte (-4 / 6 bytes > -2 / 1 byte).
    inputs = EvalInputs(
        predictions=["a"], references=["日本"], choices=[["a", "日本"]], choice_logprobs=[[-2.0, -4.0]]
    )
    assert resolve_metric("accuracy").compute(inputs).value == 0.0
    assert resolve_metric("accuracy_norm").compute(inputs).value == 1.0
    assert not math.isnan(resolve_metric("accuracy_norm").compute(inputs).ci_low or 0.0)


def test_a_choice_straddled_by_a_served_token_is_an_error_not_a_free_win(
    served: OpenAIServer, tmp_path: Path
) -> None:
    from posteval.pipeline.datasets import load
    from posteval.pipeline.outputs import _choice_rows
    from posteval.runners.openai import OpenAIRunner

    write_jsonl(tmp_path / "items.jsonl", _rows()[:2])
    suite_text = SUITE.format(bos="auto").replace(
        'Type:"\n    reference: label', 'Type: "\n    reference: label'
    )
    suite_text = suite_text.replace(
        "    scoring: loglikelihood\n", '    scoring: loglikelihood\n    target_delimiter: ""\n', 1
    )
    (tmp_path / "suite.yaml").write_text(suite_text)
    write_jsonl(tmp_path / "per_row.jsonl", _per_row(_rows()))
    suite = load_suite(tmp_path / "suite.yaml").suite
    runner = OpenAIRunner(served.base_url, "policy-toy")
    # "Type: lease" is tokenized "Type", ":", " lease": the choice's only token starts inside the context.
    with pytest.raises(InputError, match=r"example '0': choice 'lease' was scored over zero tokens"):
        list(_choice_rows(runner, suite, load(suite.datasets[0]), [0, 1]))


def test_bos_never_leaves_a_texts_first_token_unscored(base_checkpoint: Path) -> None:
    from posteval.runners.hf import HFRunner

    text = "The tenant shall pay the rent."
    runners = {mode: HFRunner(resolve_checkpoint(base_checkpoint), bos=mode) for mode in ("auto", "never")}
    got = {mode: next(iter(r.rolling_loglikelihood([text])))[1][0] for mode, r in runners.items()}
    n = len(runners["auto"].tokenizer(text, add_special_tokens=False)["input_ids"])
    assert (got["auto"].n_tokens, got["never"].n_tokens) == (n, n - 1)
