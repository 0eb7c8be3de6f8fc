"""The overfitting detector on hand-written and real Trainer histories, and its bad-input rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.db.models import LossPoint as LossPointRow
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.judging.health import (
    HealthOptions,
    LossPoint,
    assess_log,
    assess_measured,
    combine,
    read_loss_history,
)

OPTIONS = HealthOptions(max_gap=0.3, patience=3, min_improvement=0.1)


def _history(train: list[float], evals: list[float], every: int = 10) -> list[LossPoint]:
    points = [LossPoint((i + 1) * every, "train", v) for i, v in enumerate(train)]
    points += [LossPoint((i + 1) * every, "eval", v) for i, v in enumerate(evals)]
    return points


def _write_state(folder: Path, log_history: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 50, "log_history": log_history}))
    return folder


def test_healthy_when_both_losses_fall_and_the_gap_is_small() -> None:
    report = assess_log(_history([3.0, 2.0, 1.5, 1.2, 1.0], [3.1, 2.2, 1.7, 1.4, 1.2]), OPTIONS)
    assert report.verdict == "healthy"
    assert report.gap == pytest.approx(0.2)
    assert (report.best_eval_step, report.best_eval_loss) == (50, 1.2)


def test_overfitting_when_validation_has_not_improved_for_patience_evaluations_while_train_falls() -> None:
    report = assess_log(_history([3.0, 2.0, 1.0, 0.5, 0.2, 0.1], [2.0, 1.5, 1.6, 1.7, 1.65, 1.9]), OPTIONS)
    assert report.verdict == "overfitting"
    assert report.reason == (
        "validation loss has not improved for 4 evaluations since its best 1.5000 at step 20 "
        "(now 1.9000) while train loss fell (2.0000 -> 0.1000)"
    )
    assert (report.best_eval_step, report.best_eval_loss) == (20, 1.5)


def test_a_rise_shorter_than_patience_is_not_overfitting() -> None:
    report = assess_log(_history([3.0, 2.0, 1.5, 1.4, 1.3], [2.0, 1.6, 1.5, 1.55, 1.58]), OPTIONS)
    assert report.verdict == "healthy"


def test_overfitting_when_the_final_gap_exceeds_max_gap() -> None:
    report = assess_log(_history([2.0, 1.0, 0.5], [2.1, 1.2, 0.9]), OPTIONS)
    assert report.verdict == "overfitting"
    assert report.reason == "validation loss exceeds train loss by 0.4000 (> max_gap 0.3)"


def test_underfitting_when_train_loss_barely_falls() -> None:
    report = assess_log(_history([3.0, 2.95, 2.9], [3.0, 2.98, 2.95]), OPTIONS)
    assert report.verdict == "underfitting"
    assert report.reason.startswith("train loss fell by only 3.3%")


def test_underfitting_when_final_train_loss_is_above_the_ceiling() -> None:
    options = HealthOptions(max_gap=0.3, patience=3, max_train_loss=1.0)
    assert assess_log(_history([3.0, 2.0, 1.5], [3.0, 2.0, 1.6]), options).verdict == "underfitting"


def test_no_trainer_state_is_unknown(tmp_path: Path) -> None:
    points, missing = read_loss_history(tmp_path)
    report = assess_log(points, OPTIONS, missing)
    assert (report.verdict, report.reason) == ("unknown", f"no trainer_state.json in {tmp_path}")


def test_malformed_trainer_state_is_unknown_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "trainer_state.json").write_text("{not json")
    points, missing = read_loss_history(tmp_path)
    report = assess_log(points, OPTIONS, missing)
    assert report.verdict == "unknown"
    assert report.reason.startswith(f"malformed {tmp_path / 'trainer_state.json'}: JSONDecodeError")


def test_history_without_eval_loss_is_unknown(tmp_path: Path) -> None:
    _write_state(tmp_path, [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.0}])
    points, missing = read_loss_history(tmp_path)
    report = assess_log(points, OPTIONS, missing)
    assert (report.verdict, report.reason) == (
        "unknown",
        "the training log has no eval_loss (train with an eval split)",
    )


def test_loss_history_reads_train_and_eval_points(tmp_path: Path) -> None:
    _write_state(
        tmp_path,
        [
            {"step": 10, "loss": 2.0, "learning_rate": 0.1},
            {"step": 10, "eval_loss": 2.5},
            {"step": 20, "train_loss": 1.7, "train_runtime": 3.0},
        ],
    )
    points, missing = read_loss_history(tmp_path)
    assert missing is None
    assert points == [LossPoint(10, "train", 2.0), LossPoint(10, "eval", 2.5)]


def test_measured_gap_above_max_gap_is_overfitting() -> None:
    report = assess_measured(1.0, 1.5, OPTIONS)
    assert (report.verdict, report.source, report.gap) == ("overfitting", "measured", 0.5)


def test_measured_overfitting_overrides_a_healthy_log() -> None:
    log = assess_log(_history([3.0, 2.0, 1.5], [3.1, 2.2, 1.7]), OPTIONS)
    combined = combine(log, assess_measured(1.0, 1.5, OPTIONS))
    assert (combined.verdict, combined.source) == ("overfitting", "measured")
    assert combined.details["log"]["verdict"] == "healthy"


def test_measured_gap_stands_in_for_a_missing_log(tmp_path: Path) -> None:
    points, missing = read_loss_history(tmp_path)
    combined = combine(assess_log(points, OPTIONS, missing), assess_measured(1.0, 1.1, OPTIONS))
    assert (combined.verdict, combined.source) == ("healthy", "measured")


def test_real_trainer_history_of_the_sensible_fine_tune_is_healthy(finetuned_checkpoint: Path) -> None:
    points, missing = read_loss_history(finetuned_checkpoint)
    assert missing is None
    assert {p.split for p in points} == {"train", "eval"}
    assert assess_log(points, OPTIONS).verdict == "healthy"


def test_real_trainer_history_of_the_overfit_fine_tune_is_overfitting(overfit_checkpoint: Path) -> None:
    points, missing = read_loss_history(overfit_checkpoint)
    report = assess_log(points, OPTIONS, missing)
    assert report.verdict == "overfitting"
    assert report.final_eval_loss is not None and report.best_eval_loss is not None
    assert report.final_eval_loss > report.best_eval_loss


def test_a_step_logged_twice_is_stored_once_with_its_last_value(
    db_url: str, finetuned_checkpoint: Path
) -> None:
    info = resolve_checkpoint(finetuned_checkpoint)
    with session_scope(db_url) as session:
        checkpoint_id = repo.upsert_checkpoint(session, info).id
        repo.save_loss_points(session, checkpoint_id, [(99_999, "eval", 1.0), (99_999, "eval", 0.5)])
    engine = create_engine(db_url)
    with Session(engine) as session:
        values = session.scalars(
            select(LossPointRow.value).filter_by(checkpoint_id=checkpoint_id, split="eval", step=99_999)
        ).all()
    engine.dispose()
    assert values == [0.5]
