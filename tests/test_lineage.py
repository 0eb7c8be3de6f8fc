"""Lineage order is one rule (training step, then the run's creation time) that baselines, the nightly run
and the history queries share. They used to drift: nightly ordered by the checkpoint's creation time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from posteval.db import queries
from posteval.db.engine import session_scope
from posteval.db.lineage import in_lineage_order, lineage_key
from posteval.db.models import Checkpoint, Dataset, EvalRun, Metric, Suite
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.judging import nightly
from posteval.judging.baseline import baseline_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_no_step_comes_first_then_steps_then_run_time() -> None:
    keys = [
        lineage_key(5, T0 + timedelta(minutes=2)),
        lineage_key(None, T0 + timedelta(minutes=9)),
        lineage_key(5, T0 + timedelta(minutes=1)),
        lineage_key(0, T0),
    ]
    assert sorted(keys) == [keys[1], keys[3], keys[2], keys[0]]


def test_naive_times_are_utc_and_compare_with_aware_ones() -> None:
    """SQLite hands back naive datetimes, PostgreSQL aware ones: one key for both."""
    assert lineage_key(3, datetime(2026, 1, 1, 12)) == lineage_key(3, datetime(2026, 1, 1, 12, tzinfo=UTC))


def test_a_frame_with_missing_steps_sorts_like_the_key() -> None:
    frame = pd.DataFrame(
        {"run": ["a", "b", "c"], "step": [2.0, float("nan"), 2.0], "created_at": [T0, T0, T0 - timedelta(1)]}
    )
    assert list(in_lineage_order(frame)["run"]) == ["b", "c", "a"]


def _lineage(url: str) -> dict[str, str]:
    """Model m on suite s: two checkpoints at step 5 whose creation order is the reverse of their runs',
    and a checkpoint without a step evaluated last. Returns run ids by name and the checkpoint paths."""
    tag = uuid.uuid4().hex[:8]
    model = f"m-{tag}"
    with session_scope(url) as session:
        suite = Suite(name=f"s-{tag}", fingerprint=f"s{tag}".ljust(64, "0"), source_text="")
        dataset = Dataset(name="d", fingerprint=f"d{tag}".ljust(64, "0"), row_count=1, path="d.jsonl")
        late_ckpt = Checkpoint(
            fingerprint=f"a{tag}".ljust(64, "0"), path=f"/{tag}/late", model_name=model,
            training_step=5, created_at=T0 + timedelta(hours=1),
        )  # fmt: skip
        early_ckpt = Checkpoint(
            fingerprint=f"b{tag}".ljust(64, "0"), path=f"/{tag}/early", model_name=model,
            training_step=5, created_at=T0,
        )  # fmt: skip
        stepless = Checkpoint(
            fingerprint=f"c{tag}".ljust(64, "0"), path=f"/{tag}/stepless", model_name=model,
            training_step=None, created_at=T0,
        )  # fmt: skip
        session.add_all([suite, dataset, late_ckpt, early_ckpt, stepless])
        session.flush()
        runs = {}
        for name, ckpt, minutes in (
            ("first", late_ckpt, 1),
            ("second", early_ckpt, 2),
            ("stepless", stepless, 3),
        ):
            run = EvalRun(
                checkpoint_id=ckpt.id, suite_id=suite.id, model_name=model, trigger="cli",
                status="succeeded", idempotency_key=f"{name}{tag}".ljust(64, "0"),
                created_at=T0 + timedelta(minutes=minutes),
            )  # fmt: skip
            session.add(run)
            session.flush()
            session.add(
                Metric(
                    run_id=run.id, dataset_id=dataset.id, name="accuracy", value=minutes / 10, n=1,
                    higher_is_better=True, signature="",
                )
            )  # fmt: skip
            runs[name] = run.id
    return {**runs, "model": model, "early": f"/{tag}/early"}


def test_nightly_takes_the_checkpoint_of_the_newest_run_not_the_newest_checkpoint(db_url: str) -> None:
    made = _lineage(db_url)
    (target,) = nightly.targets(models=[made["model"]], database_url=db_url)
    assert (target.path, target.step) == (made["early"], 5)


def test_baseline_is_the_previous_run_in_the_same_order(db_url: str) -> None:
    made = _lineage(db_url)
    assert baseline_for(made["second"], database_url=db_url) == made["first"]
    assert baseline_for(made["first"], database_url=db_url) == made["stepless"]
    assert baseline_for(made["stepless"], database_url=db_url) is None


def test_history_lists_runs_in_the_same_order(db_url: str) -> None:
    made = _lineage(db_url)
    frame = queries.metric_history("accuracy", model=made["model"], database_url=db_url)
    assert list(frame["run_id"]) == [made["stepless"], made["first"], made["second"]]


def test_a_given_step_orders_a_final_model_without_a_training_log(
    tmp_path: Path, finetuned_checkpoint: Path
) -> None:
    import shutil

    final = tmp_path / "final"
    shutil.copytree(finetuned_checkpoint, final)
    (final / "trainer_state.json").unlink()
    assert resolve_checkpoint(final).training_step is None
    assert resolve_checkpoint(final, step=240).training_step == 240
    assert resolve_checkpoint(finetuned_checkpoint).training_step == 240  # from trainer_state.json
