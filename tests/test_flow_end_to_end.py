"""A tiny checkpoint is evaluated through the Prefect flow, and everything lands in the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from posteval.db.models import Checkpoint, Dataset, EvalRun, ExampleScore, Metric, Prediction
from posteval.flows.post_training import evaluate_checkpoint
from posteval.runners.hf import HFRunner
from tests.helpers import PROMPT, heldout_rows, plain_greedy, write_jsonl

N_ROWS, N_RIGHT, MAX_NEW = 12, 8, 6

SUITE = """\
name: {name}
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {{max_new_tokens: {max_new}, stop: ["\\n"], batch_size: 4}}
datasets:
  - name: known-answers
    path: known.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: expected
    key: id
    metrics: [exact_match]
"""


@pytest.fixture(scope="module")
def known_answers(finetuned_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset whose references equal the model's own greedy output on the first N_RIGHT rows only."""
    folder = tmp_path_factory.mktemp("known")
    rows = heldout_rows(N_ROWS)
    outputs = plain_greedy(finetuned_checkpoint, [PROMPT.format(**row) for row in rows], MAX_NEW)
    for i, (row, output) in enumerate(zip(rows, outputs, strict=True)):
        row["expected"] = output if i < N_RIGHT else "not what the model says"
    write_jsonl(folder / "known.jsonl", rows)
    return folder


def _suite(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, max_new=MAX_NEW))
    return path


def _count(session: Session, model: type, **where: object) -> int:
    return session.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0


def test_flow_stores_run_metrics_and_one_prediction_per_example(
    prefect_harness: None, finetuned_checkpoint: Path, known_answers: Path, db_url: str
) -> None:
    run_id = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(_suite(known_answers, "e2e")), database_url=db_url
    )
    engine = create_engine(db_url)
    with Session(engine) as session:
        run = session.get_one(EvalRun, run_id)
        metric = session.scalars(select(Metric).filter_by(run_id=run_id)).one()
        assert (run.status, run.error, run.trigger) == ("succeeded", None, "manual")
        assert run.started_at is not None and run.finished_at is not None
        assert (metric.name, metric.value, metric.n) == ("exact_match", N_RIGHT / N_ROWS, N_ROWS)
        assert metric.ci_low <= metric.value <= metric.ci_high
        assert metric.signature.startswith("metric:exact_match|")
        assert (
            f"|checkpoint:{session.get_one(Checkpoint, run.checkpoint_id).fingerprint[:16]}|"
            in metric.signature
        )
        assert _count(session, ExampleScore, run_id=run_id, metric="exact_match") == N_ROWS
        checkpoint = session.get_one(Checkpoint, run.checkpoint_id)
        dataset = session.get_one(Dataset, metric.dataset_id)
        keys = session.scalars(
            select(Prediction.example_key).filter_by(
                checkpoint_fingerprint=checkpoint.fingerprint, dataset_fingerprint=dataset.fingerprint
            )
        ).all()
        assert sorted(keys) == sorted(row["id"] for row in heldout_rows(N_ROWS))
    engine.dispose()


def test_second_delivery_returns_the_same_run_without_model_work(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    known_answers: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    suite = str(_suite(known_answers, "idempotent"))
    first = evaluate_checkpoint(checkpoint=str(finetuned_checkpoint), suite=suite, database_url=db_url)

    def no_model_calls(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was called for an already evaluated checkpoint")

    monkeypatch.setattr(HFRunner, "generate", no_model_calls)
    second = evaluate_checkpoint(checkpoint=str(finetuned_checkpoint), suite=suite, database_url=db_url)
    forced = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=suite, database_url=db_url, force=True
    )
    assert second == first
    assert forced != first  # a forced run is new, yet every output comes from the cache
    engine = create_engine(db_url)
    with Session(engine) as session:
        assert session.get_one(EvalRun, forced).status == "succeeded"
    engine.dispose()


def test_a_failure_after_registration_marks_the_run_failed_without_metrics(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    known_answers: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import posteval.pipeline

    def broken_score(*args: object, **kwargs: object) -> None:
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr(posteval.pipeline, "score", broken_score)
    with pytest.raises(RuntimeError, match="scorer exploded"):
        evaluate_checkpoint(
            checkpoint=str(finetuned_checkpoint),
            suite=str(_suite(known_answers, "broken")),
            database_url=db_url,
        )
    engine = create_engine(db_url)
    with Session(engine) as session:
        run = session.scalars(select(EvalRun).order_by(EvalRun.created_at.desc())).first()
        assert run is not None
        assert (run.status, run.error) == ("failed", "RuntimeError: scorer exploded")
        assert _count(session, Metric, run_id=run.id) == 0
        assert _count(session, ExampleScore, run_id=run.id) == 0
    engine.dispose()


def _counting_suite_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every suite load of posteval.pipeline.resolve, the one resolve, recorded."""
    import posteval.pipeline.resolve as resolve_module

    loads: list[str] = []
    real = resolve_module.load_suite

    def counted(path: str | Path) -> object:
        loads.append(str(path))
        return real(path)

    monkeypatch.setattr(resolve_module, "load_suite", counted)
    return loads


def test_the_cli_resolves_once_and_the_flow_takes_its_result(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    known_answers: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bad input is checked before Prefect starts; the flow does not validate the same input again."""
    from posteval.cli import run_evaluation

    loads = _counting_suite_loads(monkeypatch)
    suite = str(_suite(known_answers, "resolved-once"))
    run_evaluation(str(finetuned_checkpoint), suite, force=True, database_url=sqlite_url)
    assert loads == [suite]


def test_the_flow_given_strings_resolves_them_itself(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    known_answers: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads = _counting_suite_loads(monkeypatch)
    suite = str(_suite(known_answers, "resolved-by-flow"))
    evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=suite, force=True, database_url=sqlite_url
    )
    assert loads == [suite]
