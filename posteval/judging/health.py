"""Training health from the training log: train vs validation loss, gap, trend and a verdict.

The rules, in order (thresholds are the suite's ``training_health`` options):

1. ``unknown``: no trainer_state.json, an unreadable one, or no ``eval_loss`` in its log.
2. ``overfitting``: the validation loss has not improved on its best for at least ``patience``
   evaluations and ends above it, while the train loss fell over the same steps (early stopping's
   criterion); or the final gap (validation minus train loss) exceeds ``max_gap``.
3. ``underfitting``: the train loss fell by less than ``min_improvement`` (a fraction of its first logged
   value) over the run, or the final train loss is above ``max_train_loss`` when that is set.
4. ``healthy`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from posteval.inputs.checkpoint import load_trainer_state

Verdict = Literal["healthy", "overfitting", "underfitting", "unknown"]


class HealthOptions(BaseModel):
    """Thresholds of the overfitting detector (the suite's ``training_health`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_gap: float = Field(0.3, gt=0)
    patience: int = Field(3, ge=1)
    min_improvement: float = Field(0.1, ge=0, lt=1)
    max_train_loss: float | None = None


@dataclass(frozen=True)
class LossPoint:
    """One logged loss: a training step, the split (train or eval) and the value."""

    step: int
    split: Literal["train", "eval"]
    value: float


@dataclass(frozen=True)
class HealthReport:
    """The overfitting detector's findings for one checkpoint."""

    verdict: Verdict
    reason: str
    source: Literal["log", "measured", "none"]
    final_train_loss: float | None = None
    final_eval_loss: float | None = None
    gap: float | None = None
    ratio: float | None = None
    best_eval_step: int | None = None
    best_eval_loss: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        return asdict(self)


def read_loss_history(folder: Path) -> tuple[list[LossPoint], str | None]:
    """The (train and eval) loss points of a checkpoint's trainer_state.json, and why there are none."""
    state, problem = load_trainer_state(folder)
    if state is None:
        return [], problem
    history = state.get("log_history")
    if not isinstance(history, list):
        what = "no log_history" if "log_history" not in state else "log_history is not a list"
        kind = "KeyError" if "log_history" not in state else "TypeError"
        return [], f"malformed {folder / 'trainer_state.json'}: {kind}: {what}"
    points = []
    for entry in history:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            continue
        for key, split in (("loss", "train"), ("eval_loss", "eval")):
            value = entry.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                points.append(LossPoint(entry["step"], split, float(value)))  # type: ignore[arg-type]
    return points, None


def _series(points: list[LossPoint], split: str) -> list[tuple[int, float]]:
    by_step: dict[int, float] = {}
    for point in points:
        if point.split == split:
            by_step[point.step] = point.value  # a step logged twice keeps its last value
    return sorted(by_step.items())


def _train_loss_at(train: list[tuple[int, float]], step: int) -> float | None:
    """The last train loss logged at or before ``step``."""
    before = [value for s, value in train if s <= step]
    return before[-1] if before else None


def assess_log(
    points: list[LossPoint], options: HealthOptions, missing_reason: str | None = None
) -> HealthReport:
    """The verdict from logged losses, by the rules in this module's docstring."""
    train, evals = _series(points, "train"), _series(points, "eval")
    if missing_reason is not None:
        return HealthReport("unknown", missing_reason, "none")
    if not evals:
        return HealthReport("unknown", "the training log has no eval_loss (train with an eval split)", "none")
    if not train:
        return HealthReport("unknown", "the training log has no train loss", "none")
    final_train, final_eval = train[-1][1], evals[-1][1]
    best_step, best_eval = min(evals, key=lambda item: item[1])
    gap = final_eval - final_train
    numbers = {
        "final_train_loss": final_train,
        "final_eval_loss": final_eval,
        "gap": gap,
        "ratio": final_eval / final_train if final_train > 0 else None,
        "best_eval_step": best_step,
        "best_eval_loss": best_eval,
    }
    k = options.patience
    best_index = evals.index((best_step, best_eval))
    since_best = len(evals) - 1 - best_index
    train_at_best = _train_loss_at(train, best_step)
    if (
        since_best >= k
        and final_eval > best_eval
        and train_at_best is not None
        and final_train < train_at_best
    ):
        reason = (
            f"validation loss has not improved for {since_best} evaluations since its best "
            f"{best_eval:.4f} at step {best_step} (now {final_eval:.4f}) while train loss fell "
            f"({train_at_best:.4f} -> {final_train:.4f})"
        )
        return HealthReport("overfitting", reason, "log", **numbers)  # type: ignore[arg-type]
    if gap > options.max_gap:
        reason = f"validation loss exceeds train loss by {gap:.4f} (> max_gap {options.max_gap})"
        return HealthReport("overfitting", reason, "log", **numbers)  # type: ignore[arg-type]
    first_train = train[0][1]
    improvement = (first_train - final_train) / first_train if first_train > 0 else 0.0
    if improvement < options.min_improvement:
        reason = (
            f"train loss fell by only {improvement:.1%} ({first_train:.4f} -> {final_train:.4f}; "
            f"min_improvement {options.min_improvement:.0%})"
        )
        return HealthReport("underfitting", reason, "log", **numbers)  # type: ignore[arg-type]
    if options.max_train_loss is not None and final_train > options.max_train_loss:
        reason = f"final train loss {final_train:.4f} is above max_train_loss {options.max_train_loss}"
        return HealthReport("underfitting", reason, "log", **numbers)  # type: ignore[arg-type]
    reason = f"gap {gap:.4f} within max_gap {options.max_gap}; no sustained rise of the validation loss"
    return HealthReport("healthy", reason, "log", **numbers)  # type: ignore[arg-type]


def assess_measured(train_loss: float, eval_loss: float, options: HealthOptions) -> HealthReport:
    """The verdict from losses measured by the runner on a train sample and a validation set (gap only)."""
    gap = eval_loss - train_loss
    numbers = {
        "final_train_loss": train_loss,
        "final_eval_loss": eval_loss,
        "gap": gap,
        "ratio": eval_loss / train_loss if train_loss > 0 else None,
    }
    if gap > options.max_gap:
        reason = f"measured validation loss exceeds train loss by {gap:.4f} (> max_gap {options.max_gap})"
        return HealthReport("overfitting", reason, "measured", **numbers)  # type: ignore[arg-type]
    reason = f"measured gap {gap:.4f} within max_gap {options.max_gap}"
    return HealthReport("healthy", reason, "measured", **numbers)  # type: ignore[arg-type]


def combine(log_report: HealthReport, measured: HealthReport | None) -> HealthReport:
    """One verdict: overfitting if either source says so; the log's trend otherwise; measured if no log."""
    if measured is None:
        return log_report
    if log_report.verdict == "unknown" or (
        measured.verdict == "overfitting" and log_report.verdict != "overfitting"
    ):
        return HealthReport(
            **{**measured.as_dict(), "details": {**measured.details, "log": log_report.as_dict()}}
        )
    return HealthReport(
        **{**log_report.as_dict(), "details": {**log_report.details, "measured": measured.as_dict()}}
    )
