"""A code dataset through the Prefect flow: n samples per problem generated and cached, every sample run
in the sandbox, pass@k and the pass rate stored with each problem's outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from posteval.db.models import EvalRun, ExampleScore, Metric, Prediction
from posteval.flows.post_training import evaluate_checkpoint
from posteval.runners.hf import HFRunner
from posteval.views.report import render_report

# Each prompt ends inside a comment, so whatever one line the model writes, the program is the prompt's:
# the first two problems pass every sample, the last two fail (a wrong answer, an exception).
PROBLEMS = [
    (
        "p-add",
        "add",
        "def add(a, b):\n    return a + b\n# ",
        "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    ),
    (
        "p-neg",
        "neg",
        "def neg(a):\n    return -a\n# ",
        "def check(candidate):\n    assert candidate(4) == -4\n",
    ),
    (
        "p-wrong",
        "one",
        "def one():\n    return 2\n# ",
        "def check(candidate):\n    assert candidate() == 1, 'not one'\n",
    ),
    (
        "p-raise",
        "boom",
        "def boom():\n    return {}['x']\n# ",
        "def check(candidate):\n    assert candidate() == 0\n",
    ),
]
N_SAMPLES = 3

SUITE = """\
name: code-flow
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 4, stop: ["\\n"], batch_size: 4}
datasets:
  - name: problems
    path: problems.jsonl
    kind: code
    prompt: "{prompt}"
    key: task_id
    sampling: {n: 3, temperature: 1.0, top_p: 0.95, seed: 7}
    sandbox: {backend: local, workers: 2, timeout_s: 20}
    metrics: [{pass_at_k: {k: 1}}, {pass_at_k: {k: 3}}, pass_rate]
"""


@pytest.fixture(scope="module")
def code_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("code")
    with (folder / "problems.jsonl").open("w") as handle:
        for task_id, entry, prompt, test in PROBLEMS:
            handle.write(
                json.dumps({"task_id": task_id, "prompt": prompt, "test": test, "entry_point": entry}) + "\n"
            )
    (folder / "suite.yaml").write_text(SUITE)
    return folder / "suite.yaml"


def test_code_flow_stores_pass_at_k_and_each_samples_outcome(
    prefect_harness: None, finetuned_checkpoint: Path, code_suite: Path, db_url: str
) -> None:
    run_id = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(code_suite), database_url=db_url
    )
    engine = create_engine(db_url)
    with Session(engine) as session:
        assert session.get_one(EvalRun, run_id).status == "succeeded"
        metrics = {m.name: m for m in session.scalars(select(Metric).filter_by(run_id=run_id))}
        assert sorted(metrics) == ["pass@1", "pass@3", "pass_rate"]
        assert [(metrics[name].value, metrics[name].n) for name in ("pass@1", "pass@3", "pass_rate")] == [
            (0.5, 4),
            (0.5, 4),
            (0.5, 4),
        ]
        assert metrics["pass@1"].details == {"outcomes": {"passed": 6, "failed": 6}}
        assert "|sandbox:local|" in metrics["pass@1"].signature
        scores = {
            s.example_key: s
            for s in session.scalars(select(ExampleScore).filter_by(run_id=run_id, metric="pass@1"))
        }
        assert {key: s.value for key, s in scores.items()} == {
            "p-add": 1.0,
            "p-neg": 1.0,
            "p-wrong": 0.0,
            "p-raise": 0.0,
        }
        wrong = scores["p-wrong"].detail
        assert (wrong["n"], wrong["passed"]) == (N_SAMPLES, 0)
        assert {s["status"] for s in wrong["samples"]} == {"failed"}
        assert wrong["samples"][0]["error"] == "AssertionError"
        assert wrong["samples"][0]["message"] == "tests.py:2: assert candidate() == 1, 'not one' (not one)"
        assert scores["p-raise"].detail["samples"][0]["error"] == "KeyError"
        assert scores["p-add"].detail["passed"] == N_SAMPLES
        keys = session.scalars(select(Prediction.example_key).where(Prediction.example_key.like("p-%"))).all()
        expected = {f"{task_id}#{s}" for task_id, *_ in PROBLEMS for s in range(N_SAMPLES)}
        assert expected <= set(keys)
    engine.dispose()
    report = render_report(run_id, database_url=db_url)
    assert "<h3>problems: 6 of 12 samples passed</h3>" in report
    wrong_row = (
        '<tr><td>p-wrong</td><td>0</td><td>failed</td><td><span class="text">AssertionError</span></td>'
        '<td><span class="text">tests.py:2: assert candidate() == 1, &#x27;not one&#x27; (not one)'
        "</span></td>"
        '<td><span class="text"><i>(empty)</i></span></td></tr>'
    )
    assert wrong_row in report
    assert "<td>p-add</td>" not in report.split('id="code"')[1]  # passing problems are not listed


def test_sampled_programs_come_from_the_cache_the_second_time(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    code_suite: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(code_suite), database_url=db_url
    )

    def no_model_calls(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was called although every sample is stored")

    monkeypatch.setattr(HFRunner, "generate", no_model_calls)
    forced = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(code_suite), database_url=db_url, force=True
    )
    engine = create_engine(db_url)
    with Session(engine) as session:
        values = [
            {m.name: m.value for m in session.scalars(select(Metric).filter_by(run_id=run))}
            for run in (first, forced)
        ]
    engine.dispose()
    assert values[0] == values[1]
