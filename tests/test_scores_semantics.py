"""Suite and data rules of multiple choice and reports, the gate's refusal of another tokenization policy,
and reports shown as the run's details (runs show, the artifact's Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posteval.db.engine import session_scope
from posteval.db.models import Checkpoint, Dataset, EvalRun, Metric, RunDetail, Suite
from posteval.errors import DatasetError, InputError, SuiteError
from posteval.inputs.data import load_dataset
from posteval.inputs.suite import load_suite, missing_kinds
from posteval.judging.compare import _RunMetrics, check_comparable
from posteval.views.render import print_run
from posteval.views.run_details import markdown

SUITE = """\
name: sem
allow_incomplete: true
datasets:
  - name: mc
    path: mc.jsonl
    prompt: "Q: {{q}}"
    reference: gold
{extra}
    metrics: {metrics}
"""


def _suite(tmp_path: Path, extra: str, metrics: str, tail: str = "") -> Path:
    (tmp_path / "mc.jsonl").write_text('{"q": "x", "gold": 1, "options": ["a", "b"]}\n')
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(extra=extra, metrics=metrics) + tail)
    return path


def test_accuracy_norm_needs_multiple_choice_scores(tmp_path: Path) -> None:
    path = _suite(tmp_path, "    labels: [a, b]", "[accuracy_norm]")
    with pytest.raises(
        SuiteError, match=r"metrics\[0\]: metric 'accuracy_norm' needs multiple choice scores"
    ):
        load_suite(path)


def test_per_row_choices_need_loglikelihood_scoring(tmp_path: Path) -> None:
    path = _suite(tmp_path, "    choices: options", "[accuracy]")
    with pytest.raises(SuiteError, match=r"'choices' \(per-row choices\) needs scoring: loglikelihood"):
        load_suite(path)


def test_per_row_choices_take_accuracy_but_not_label_set_metrics(tmp_path: Path) -> None:
    extra = "    choices: options\n    scoring: loglikelihood"
    assert (
        load_suite(_suite(tmp_path, extra, "[accuracy, accuracy_norm]")).suite.datasets[0].choices
        == "options"
    )
    with pytest.raises(SuiteError, match=r"metric 'f1' needs the dataset's 'labels'"):
        load_suite(_suite(tmp_path, extra, "[f1]"))


def test_a_gold_index_outside_the_choices_names_the_line(tmp_path: Path) -> None:
    path = _suite(tmp_path, "    choices: options\n    scoring: loglikelihood", "[accuracy]")
    (tmp_path / "mc.jsonl").write_text(
        '{"q": "x", "gold": "b", "options": ["a", "b"]}\n{"q": "y", "gold": 2, "options": ["a", "b"]}\n'
    )
    with pytest.raises(
        DatasetError,
        match=rf"{tmp_path / 'mc.jsonl'}:2: reference 'gold' is the index 2, outside the 2 choices",
    ):
        load_dataset(load_suite(path).suite.datasets[0])


def test_a_gold_string_among_the_choices_and_an_index_name_the_same_choice(tmp_path: Path) -> None:
    path = _suite(tmp_path, "    choices: options\n    scoring: loglikelihood", "[accuracy]")
    (tmp_path / "mc.jsonl").write_text(
        '{"q": "x", "gold": "b", "options": ["a", "b"]}\n{"q": "y", "gold": 0, "options": ["c", "d"]}\n'
    )
    loaded = load_dataset(load_suite(path).suite.datasets[0])
    assert (loaded.choice_lists(), loaded.gold_choices()) == ([["a", "b"], ["c", "d"]], ["b", "c"])


def test_choices_that_are_not_a_list_of_strings_are_refused(tmp_path: Path) -> None:
    path = _suite(tmp_path, "    choices: options\n    scoring: loglikelihood", "[accuracy]")
    (tmp_path / "mc.jsonl").write_text('{"q": "x", "gold": 0, "options": "a, b"}\n')
    with pytest.raises(
        DatasetError, match=r"mc.jsonl:1: field 'options' must be a non-empty list of strings"
    ):
        load_dataset(load_suite(path).suite.datasets[0])


def test_a_gate_on_a_report_is_refused(tmp_path: Path) -> None:
    path = _suite(
        tmp_path, "    labels: [a, b]", "[accuracy, confusion_matrix]", "gates:\n  mc/confusion_matrix: {}\n"
    )
    with pytest.raises(SuiteError, match=r"gates.mc/confusion_matrix: 'confusion_matrix' is a report"):
        load_suite(path)


def test_a_report_alone_is_not_a_task_metric(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, "    labels: [a, b]", "[per_class]")).suite
    assert "task" in missing_kinds(suite)


def _metrics(tokens: str | None) -> _RunMetrics:
    return _RunMetrics(
        "s", "name: s", "succeeded", {("d", "accuracy"): (0.5, True, 0.4, 0.6)}, {"d": "f"}, {"d": tokens}
    )


def test_the_gate_refuses_a_baseline_of_another_tokenization_policy() -> None:
    now = "tokens:bos=auto,prefix=[],empty=[0]"
    check_comparable(_metrics(now), _metrics(now), ("a" * 32, "b" * 32))
    with pytest.raises(
        InputError, match=r"different tokenization policies .* for d \(none recorded vs tokens:bos=auto"
    ):
        check_comparable(_metrics(None), _metrics(now), ("a" * 32, "b" * 32))


def _stored_run(url: str) -> str:
    run_id = "e" * 32
    with session_scope(url) as session:
        if session.get(EvalRun, run_id) is not None:
            return run_id
        ckpt = Checkpoint(fingerprint="f" * 64, path="/c", model_name="details-model")
        suite = Suite(name="details-suite", fingerprint="9" * 64, source_text="name: details-suite")
        dataset = Dataset(name="mc", fingerprint="8" * 64, row_count=3, path="/d")
        session.add_all([ckpt, suite, dataset])
        session.flush()
        session.add(
            EvalRun(
                id=run_id,
                checkpoint_id=ckpt.id,
                suite_id=suite.id,
                model_name="details-model",
                trigger="cli",
                status="succeeded",
                idempotency_key="7" * 64,
                warnings=[],
            )
        )
        session.flush()
        session.add(
            Metric(
                run_id=run_id,
                dataset_id=dataset.id,
                name="accuracy",
                value=2 / 3,
                ci_low=0.0,
                ci_high=1.0,
                n=3,
                higher_is_better=True,
                signature="metric:accuracy",
                details={},
            )
        )
        session.add(
            RunDetail(
                run_id=run_id,
                dataset_id=dataset.id,
                name="confusion_matrix",
                n=3,
                signature="metric:confusion_matrix",
                details={"labels": ["a", "b"], "matrix": [[1, 0], [1, 1]]},
            )
        )
    return run_id


def test_runs_show_lists_reports_as_details_not_metrics(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from posteval.views.output import Format

    run_id = _stored_run(db_url)
    print_run(run_id, Format.json, database_url=db_url)
    shown = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in shown["metrics"]] == ["accuracy"]
    assert shown["details"] == [
        {
            "dataset": "mc",
            "name": "confusion_matrix",
            "n": 3,
            "signature": "metric:confusion_matrix",
            "details": {"labels": ["a", "b"], "matrix": [[1, 0], [1, 1]]},
        }
    ]
    print_run(run_id, Format.table, database_url=db_url)
    table = capsys.readouterr().out
    assert "mc: confusion_matrix" in table and "true \\ predicted" in table


def test_the_artifact_markdown_shows_each_report_as_a_table() -> None:
    reports = [
        {
            "dataset": "mc",
            "name": "confusion_matrix",
            "details": {"labels": ["a", "b|c"], "matrix": [[1, 0], [2, 3]]},
        },
        {"dataset": "mc", "name": "per_class", "details": {"per_class": {}}},
    ]
    assert markdown(reports) == (
        "### mc: confusion_matrix\n\n"
        "| true \\ predicted | a | b\\|c |\n|---|---|---|\n| a | 1 | 0 |\n| b\\|c | 2 | 3 |\n\n"
        "### mc: per_class\n\nno examples\n"
    )


GATED = """\
name: gated-policy
allow_incomplete: true
generation: {max_new_tokens: 4, batch_size: 8}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    metrics: [accuracy]
gates:
  clauses/accuracy: {max_drop: 0.5}
"""


def _evaluated_run(checkpoint: Path, suite_path: Path, url: str) -> str:
    from posteval import pipeline
    from posteval.inputs.checkpoint import resolve_checkpoint

    loaded = load_suite(suite_path)
    info = resolve_checkpoint(checkpoint, model_name="gated-policy-model")
    refs = [pipeline.prepare_dataset(spec) for spec in loaded.suite.datasets]
    run = pipeline.register_run(info, loaded, refs, trigger="cli", force=True, database_url=url)
    outcomes = []
    for ref in refs:
        pipeline.run_model(info, loaded.suite, ref, database_url=url)
        outcomes.append(pipeline.score(info, loaded.suite, ref, database_url=url))
    pipeline.persist(run.run_id, outcomes, database_url=url)
    return run.run_id


def test_a_baseline_stored_before_the_policy_is_incomparable_naming_it(
    tmp_path: Path, finetuned_checkpoint: Path, sqlite_url: str
) -> None:
    from sqlalchemy import update

    from posteval import pipeline
    from tests.helpers import heldout_rows, write_jsonl

    write_jsonl(tmp_path / "clauses.jsonl", heldout_rows(6))
    (tmp_path / "suite.yaml").write_text(GATED)
    suite = load_suite(tmp_path / "suite.yaml").suite
    baseline = _evaluated_run(finetuned_checkpoint, tmp_path / "suite.yaml", sqlite_url)
    with session_scope(sqlite_url) as session:  # as stored before this version: no tokens: field
        for metric in session.query(Metric).filter_by(run_id=baseline):
            stripped = "|".join(p for p in metric.signature.split("|") if not p.startswith("tokens:"))
            session.execute(update(Metric).where(Metric.id == metric.id).values(signature=stripped))
    candidate = _evaluated_run(finetuned_checkpoint, tmp_path / "suite.yaml", sqlite_url)
    status, summary, comparison = pipeline.gate(candidate, suite, database_url=sqlite_url)
    assert (status, comparison) == ("incomparable", None)
    assert (
        "different tokenization policies" in summary
        and "clauses (none recorded vs tokens:bos=auto" in summary
    )
    again = _evaluated_run(finetuned_checkpoint, tmp_path / "suite.yaml", sqlite_url)  # the baseline re-run
    assert pipeline.gate(again, suite, database_url=sqlite_url)[0] == "passed"
