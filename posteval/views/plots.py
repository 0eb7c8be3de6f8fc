"""Plots people would rather look at than tables: loss curves (and, later, metric trends) as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import pandas as pd

SPLIT_STYLE = {"train": ("train loss", "tab:blue"), "eval": ("validation loss", "tab:orange")}


def loss_curve_png(curve: pd.DataFrame, path: Path, *, title: str = "loss") -> Path:
    """Train and validation loss against step (columns step, split, value), the best validation marked."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for split, (label, colour) in SPLIT_STYLE.items():
        points = curve[curve["split"] == split].sort_values("step")
        if not points.empty:
            ax.plot(points["step"], points["value"], marker="o", markersize=3, label=label, color=colour)
    evals = curve[curve["split"] == "eval"]
    if not evals.empty:
        best = evals.loc[evals["value"].idxmin()]
        ax.axvline(best["step"], color="tab:gray", linestyle="--", linewidth=1)
        ax.annotate(
            f"best validation {best['value']:.3f} @ {int(best['step'])}",
            (best["step"], best["value"]),
            textcoords="offset points",
            xytext=(6, 10),
            fontsize=8,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if not curve.empty:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def metric_trend_png(history: pd.DataFrame, path: Path, *, title: str, log_scale: bool = False) -> Path:
    """A metric's value (with its CI band) across a model's runs, one line per dataset; ``log_scale``
    puts the values on a log axis (perplexity, which spans orders of magnitude early in training)."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for dataset, rows in history.groupby("dataset", sort=False):
        x = list(range(len(rows)))
        ax.plot(x, rows["value"], marker="o", markersize=4, label=str(dataset))
        if rows["ci_low"].notna().all():
            ax.fill_between(x, rows["ci_low"], rows["ci_high"], alpha=0.2)
        labels = [
            f"{'-' if pd.isna(s) else int(s)}\n{str(r)[:6]}"
            for s, r in zip(rows["step"], rows["run_id"], strict=True)
        ]
        ax.set_xticks(x, labels, fontsize=7)
    ax.set_xlabel("run (training step / run id)")
    ax.set_ylabel(str(history["metric"].iloc[0]) if not history.empty else "value")
    if log_scale:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
