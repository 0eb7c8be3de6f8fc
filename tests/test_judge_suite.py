"""The suite's judge section: the rule of three counts a judge metric by its dataset, and judge metrics
without the judge part they need are refused naming the dataset and what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from posteval.errors import SuiteError
from posteval.inputs.suite import load_suite, missing_kinds

JUDGED = """\
  - name: advice
    path: advice.jsonl
    prompt: "{{question}}"
    general: {general}
    judge:
      model: openai:judge@http://127.0.0.1:9/v1
      {parts}
    metrics: [{metrics}]
"""
RUBRIC = "rubric: {criteria: [helpful]}"
HEALTH = "training_health: {max_gap: 0.3}\nallow_incomplete: true\n"


def _load(
    tmp_path: Path, *, general: bool = False, parts: str = RUBRIC, metrics: str = "judge_score"
) -> object:
    path = tmp_path / "suite.yaml"
    dataset = JUDGED.format(general=str(general).lower(), parts=parts, metrics=metrics)
    path.write_text(f"name: judged\n{HEALTH}datasets:\n{dataset}")
    return load_suite(path).suite


def test_a_judge_metric_is_a_task_metric_on_an_open_ended_dataset(tmp_path: Path) -> None:
    assert missing_kinds(_load(tmp_path, general=False)) == ["general"]  # type: ignore[arg-type]


def test_a_judge_metric_is_a_general_quality_metric_on_a_general_dataset(tmp_path: Path) -> None:
    assert missing_kinds(_load(tmp_path, general=True)) == ["task"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parts", "metrics", "message"),
    [
        (RUBRIC, "win_rate", r"datasets\[0\]: metrics \['win_rate'\] need the judge's 'pairwise' section"),
        ("pairwise: {}", "judge_score", r"datasets\[0\]: metric 'judge_score' needs the judge's 'rubric'"),
        ("temperature: 0", "judge_score", r"datasets\[0\]\.judge: a judge needs a 'rubric' \(pointwise\)"),
        ("rubric: {criteria: [a], scale: [3, 1]}", "judge_score", r"'scale' must be increasing"),
    ],
)
def test_a_judge_section_missing_what_its_metrics_need_is_refused(
    tmp_path: Path, parts: str, metrics: str, message: str
) -> None:
    with pytest.raises(SuiteError, match=message):
        _load(tmp_path, parts=parts, metrics=metrics)


def test_judge_metrics_without_a_judge_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    dataset = '  - {name: a, path: a.jsonl, prompt: "{q}", metrics: [win_rate]}\n'
    path.write_text(f"name: judged\n{HEALTH}datasets:\n{dataset}")
    with pytest.raises(SuiteError, match=r"metrics \['win_rate'\] need a 'judge' section"):
        load_suite(path)
