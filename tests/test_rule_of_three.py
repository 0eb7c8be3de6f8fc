"""A suite must measure a task metric, a general-quality metric and an overfitting detector."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from posteval.errors import SuiteError
from posteval.inputs.suite import RULE_OF_THREE, load_suite

TASK = """\
  - name: task
    path: task.jsonl
    prompt: "Q: {q}\\nA:"
    reference: a
    metrics: [exact_match]
"""
GENERAL = """\
  - name: general
    path: general.jsonl
    kind: perplexity
    general: true
    metrics: [perplexity]
"""
HEALTH = "training_health: {max_gap: 0.3}\n"


def _suite(tmp_path: Path, datasets: str, extra: str = "") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: r3\ndatasets:\n{datasets}{extra}")
    return path


def test_complete_suite_loads(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, TASK + GENERAL, HEALTH)).suite
    assert [d.name for d in suite.datasets] == ["task", "general"]


@pytest.mark.parametrize(
    ("datasets", "extra", "missing"),
    [
        (GENERAL, HEALTH, ["task"]),
        (TASK, HEALTH, ["general"]),
        (TASK + GENERAL, "", ["overfitting"]),
        (TASK, "", ["general", "overfitting"]),
    ],
)
def test_incomplete_suite_is_refused_naming_what_is_missing(
    tmp_path: Path, datasets: str, extra: str, missing: list[str]
) -> None:
    path = _suite(tmp_path, datasets, extra)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    expected = f"{path}: the suite lacks " + "; ".join(RULE_OF_THREE[k] for k in missing)
    assert str(info.value) == (
        f"{expected}. Every suite measures all three; set allow_incomplete: true to run it anyway"
    )


def test_allow_incomplete_turns_the_refusal_into_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _suite(tmp_path, TASK, "allow_incomplete: true\n")
    with caplog.at_level(logging.WARNING, logger="posteval.inputs.suite"):
        load_suite(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: the suite lacks {RULE_OF_THREE['general']}; {RULE_OF_THREE['overfitting']} "
        "(allowed by allow_incomplete: true)"
    ]


def test_measured_gap_needs_both_samples(tmp_path: Path) -> None:
    path = _suite(tmp_path, TASK + GENERAL, "training_health: {train_sample: {path: t.jsonl}}\n")
    with pytest.raises(SuiteError, match=r"training_health: a measured loss gap needs both 'train_sample'"):
        load_suite(path)


def test_health_samples_become_token_loss_datasets_with_resolved_paths(tmp_path: Path) -> None:
    extra = (
        "training_health:\n"
        "  train_sample: {path: train.jsonl, template: '{q} {a}', limit: 5}\n"
        "  validation: {path: val.jsonl, template: '{q} {a}'}\n"
    )
    suite = load_suite(_suite(tmp_path, TASK + GENERAL, extra)).suite
    health = suite.health_datasets()
    assert [(d.name, d.kind, d.path, d.prompt, d.limit, d.metrics) for d in health] == [
        ("train-sample", "perplexity", tmp_path / "train.jsonl", "{q} {a}", 5, ["token_loss"]),
        ("validation", "perplexity", tmp_path / "val.jsonl", "{q} {a}", None, ["token_loss"]),
    ]


def test_token_loss_alone_is_not_an_overfitting_detector(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: r\ndatasets:\n"
        "  - {name: t, path: t.jsonl, prompt: '{q}', reference: a, metrics: [exact_match]}\n"
        "  - {name: g, path: g.jsonl, kind: perplexity, general: true, metrics: [perplexity, token_loss]}\n"
    )
    with pytest.raises(SuiteError, match=r"the suite lacks an overfitting detector"):
        load_suite(path)
