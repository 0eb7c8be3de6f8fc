"""Metric problems are refused when the suite loads, naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from posteval.db.models import EvalRun
from posteval.errors import CheckpointError, SuiteError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.inputs.suite import load_suite
from posteval.runners.hf import HFRunner
from tests.helpers import small_suite

SUITE = """\
name: m
allow_incomplete: true
datasets:
  - name: out
    path: out.jsonl
    prompt: "{{q}}"
{reference}    metrics: [{metric}]
"""


def _load(tmp_path: Path, metric: str, reference: str = "    reference: a\n") -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(metric=metric, reference=reference))
    load_suite(path)


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("{json_schema: {schema: {type: 12}}}", r"option 'schema': not a valid JSON schema"),
        ("{regex_match: {pattern: '(unclosed'}}", r"regex_match.*pattern.*(missing \)|unterminated)"),
        (
            "{f1: {average: sideways}}",
            r"metric 'f1': option 'average': Input should be 'macro', 'micro' or 'weighted'",
        ),
        ("{exact_match: {ignore_cas: true}}", r"option 'ignore_cas': Extra inputs are not permitted"),
        ("bleu_score", r"unknown metric 'bleu_score'\. Did you mean 'bleu'\? Known metrics: "),
    ],
)
def test_bad_metric_is_refused_naming_file_and_field(tmp_path: Path, metric: str, expected: str) -> None:
    with pytest.raises(
        SuiteError, match=rf"^{tmp_path / 'suite.yaml'}: datasets\[0\]\.metrics\[0\]: .*{expected}"
    ):
        _load(tmp_path, metric)


def test_metric_needing_references_on_a_dataset_without_them(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as info:
        _load(tmp_path, "bleu", reference="")
    assert str(info.value) == (
        f"{tmp_path / 'suite.yaml'}: datasets[0].metrics[0]: metric 'bleu' needs references, "
        "and dataset 'out' names no 'reference' field"
    )


def test_reference_free_metric_needs_no_reference(tmp_path: Path) -> None:
    _load(tmp_path, "json_valid", reference="")


def test_unloadable_base_model_is_reported_before_any_model_work(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    tmp_path: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "out.jsonl").write_text('{"q": "x", "a": "y"}\n')
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        SUITE.format(metric="exact_match", reference="    reference: a\n") + "base_model: no-such-base\n"
    )

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("model work started")

    monkeypatch.setattr(HFRunner, "__init__", no_model)
    engine = create_engine(sqlite_url)
    with Session(engine) as session:
        before = session.scalar(select(func.count()).select_from(EvalRun))
    with pytest.raises(CheckpointError, match=rf"^checkpoint folder not found: {tmp_path / 'no-such-base'}$"):
        evaluate_checkpoint(checkpoint=str(finetuned_checkpoint), suite=str(suite), database_url=sqlite_url)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(EvalRun)) == before
    engine.dispose()


def test_two_entries_storing_the_same_metric_are_refused(tmp_path: Path) -> None:
    path = small_suite(tmp_path, metrics="[exact_match, {exact_match: {strip: true}}]")
    with pytest.raises(
        SuiteError, match=r"metrics\[1\]: stores the same metric 'exact_match' as datasets\[0\]"
    ):
        load_suite(path)


def test_repeated_labels_are_refused(tmp_path: Path) -> None:
    path = small_suite(tmp_path, metrics="[accuracy]", extra="")
    path.write_text(
        path.read_text().replace("    reference: a\n", "    reference: a\n    labels: [x, x, y]\n")
    )
    with pytest.raises(SuiteError, match=r"datasets\[0\]: 'labels' repeats \['x'\]; each label once"):
        load_suite(path)


def test_a_perplexity_metric_on_a_generated_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"metric 'perplexity' needs a dataset with kind: perplexity"):
        load_suite(small_suite(tmp_path, metrics="[exact_match, perplexity]"))


def test_a_prompt_with_a_format_spec_is_refused_with_the_suite(tmp_path: Path) -> None:
    # Issue 13: format specs are refused when the suite loads (one fitted the old per-row check).
    path = small_suite(tmp_path, prompt="{q:.2f}")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value) == (
        f"{path}: datasets[0].prompt: placeholder '{{q:.2f}}' has a format spec or conversion; "
        "write it as {q} (got '{q:.2f}')"
    )
