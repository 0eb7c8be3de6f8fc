"""Edge cases found in review: each input is refused early, or handled, as named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from posteval.db import repo
from posteval.db.engine import session_scope
from posteval.db.models import LossPoint
from posteval.errors import DatasetError, RunnerError, SuiteError
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.data import load_dataset
from posteval.inputs.suite import load_suite
from posteval.pipeline import config_hash, register_run

BASE = """\
name: r
allow_incomplete: true
datasets:
  - name: qa
    path: qa.jsonl
    prompt: "{prompt}"
    reference: a
    metrics: {metrics}
"""


def _suite(tmp_path: Path, prompt: str = "Q: {q}", metrics: str = "[exact_match]", extra: str = "") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(BASE.format(prompt=prompt, metrics=metrics) + extra)
    return path


def test_two_entries_storing_the_same_metric_are_refused(tmp_path: Path) -> None:
    path = _suite(tmp_path, metrics="[exact_match, {exact_match: {strip: true}}]")
    with pytest.raises(
        SuiteError, match=r"metrics\[1\]: stores the same metric 'exact_match' as datasets\[0\]"
    ):
        load_suite(path)


def test_repeated_labels_are_refused(tmp_path: Path) -> None:
    path = _suite(tmp_path, metrics="[accuracy]", extra="")
    path.write_text(
        path.read_text().replace("    reference: a\n", "    reference: a\n    labels: [x, x, y]\n")
    )
    with pytest.raises(SuiteError, match=r"datasets\[0\]: 'labels' repeats \['x'\]; each label once"):
        load_suite(path)


def test_a_perplexity_metric_on_a_generated_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"metric 'perplexity' needs a dataset with kind: perplexity"):
        load_suite(_suite(tmp_path, metrics="[exact_match, perplexity]"))


def test_token_loss_alone_is_not_an_overfitting_detector(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(
        "name: r\ndatasets:\n"
        "  - {name: t, path: t.jsonl, prompt: '{q}', reference: a, metrics: [exact_match]}\n"
        "  - {name: g, path: g.jsonl, kind: perplexity, general: true, metrics: [perplexity, token_loss]}\n"
    )
    with pytest.raises(SuiteError, match=r"the suite lacks an overfitting detector"):
        load_suite(path)


def test_a_prompt_with_a_format_spec_is_refused_with_the_suite(tmp_path: Path) -> None:
    # Issue 13: format specs are refused when the suite loads (one fitted the old per-row check).
    path = _suite(tmp_path, prompt="{q:.2f}")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value) == (
        f"{path}: datasets[0].prompt: placeholder '{{q:.2f}}' has a format spec or conversion; "
        "write it as {q} (got '{q:.2f}')"
    )


def test_jsonl_errors_name_the_file_line_past_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n\n\n{"a": "z"}\n')
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'qa.jsonl'}:4: missing field\(s\) \['q'\]"):
        load_dataset(load_suite(_suite(tmp_path)).suite.datasets[0])


def test_csv_errors_name_the_file_line_after_the_header(tmp_path: Path) -> None:
    (tmp_path / "qa.csv").write_text("q,a\nx,y\n,z\n")
    path = _suite(tmp_path)
    path.write_text(path.read_text().replace("qa.jsonl", "qa.csv"))
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'qa.csv'}:3: missing field\(s\) \['q'\]"):
        load_dataset(load_suite(path).suite.datasets[0])


def test_an_overlong_key_is_refused_before_it_reaches_the_database(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "x", "a": "y", "id": "k" * 300}) + "\n")
    path = _suite(tmp_path)
    path.write_text(path.read_text().replace("    reference: a\n", "    reference: a\n    key: id\n"))
    with pytest.raises(DatasetError, match=r"key field 'id' is 300 characters long \(at most 255\)"):
        load_dataset(load_suite(path).suite.datasets[0])


def test_the_cache_key_follows_the_key_field_and_the_prompt(
    tmp_path: Path, finetuned_checkpoint: Path
) -> None:
    checkpoint = resolve_checkpoint(finetuned_checkpoint)
    suite = load_suite(_suite(tmp_path)).suite
    spec = suite.datasets[0]
    base = config_hash(suite, spec, checkpoint)
    assert config_hash(suite, spec.model_copy(update={"key": "id"}), checkpoint) != base
    assert config_hash(suite, spec.model_copy(update={"prompt": "Question: {q}"}), checkpoint) != base
    assert config_hash(suite, spec, checkpoint) == base


def test_outputs_stored_twice_keep_the_first(db_url: str) -> None:
    with session_scope(db_url) as session:
        repo.add_predictions(session, "c" * 64, "d" * 64, "h" * 64, [("k1", "first", {}), ("k2", "b", {})])
    with session_scope(db_url) as session:  # a second worker that computed the same example
        repo.add_predictions(session, "c" * 64, "d" * 64, "h" * 64, [("k1", "second", {}), ("k3", "c", {})])
    with session_scope(db_url) as session:
        stored = repo.cached_outputs(session, "c" * 64, "d" * 64, "h" * 64)
    assert {k: v.output for k, v in stored.items()} == {"k1": "first", "k2": "b", "k3": "c"}
    with session_scope(db_url) as session:  # and again: nothing new, nothing replaced
        repo.add_predictions(session, "c" * 64, "d" * 64, "h" * 64, [("k1", "third", {})])
        assert len(repo.cached_keys(session, "c" * 64, "d" * 64, "h" * 64)) == 3


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
            select(LossPoint.value).filter_by(checkpoint_id=checkpoint_id, split="eval", step=99_999)
        ).all()
    engine.dispose()
    assert values == [0.5]


def test_a_second_flow_cannot_claim_a_running_run(
    tmp_path: Path, finetuned_checkpoint: Path, sqlite_url: str
) -> None:
    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n')
    loaded = load_suite(_suite(tmp_path))
    checkpoint = resolve_checkpoint(finetuned_checkpoint, model_name="claims")
    from posteval.pipeline import prepare_dataset

    datasets = [prepare_dataset(spec) for spec in loaded.suite.datasets]
    first = register_run(
        checkpoint, loaded, datasets, trigger="event", flow_run_id="A", database_url=sqlite_url
    )
    assert first.status == "running"
    with pytest.raises(
        RunnerError, match=rf"run {first.run_id} .* is already being evaluated \(flow run A\)"
    ):
        register_run(checkpoint, loaded, datasets, trigger="event", flow_run_id="B", database_url=sqlite_url)


def test_an_unknown_database_scheme_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = {
        "POSTEVAL_HOME": str(tmp_path),
        "POSTEVAL_DATABASE_URL": "postgres://user:secret@nowhere/db",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "runs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    # Issue 13: a scheme SQLAlchemy cannot load is bad input naming the variable (it was a raw exit 3).
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: bad setting: POSTEVAL_DATABASE_URL: unsupported database 'postgres' "
        "(expected sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB)"
    ]
    assert "secret" not in result.stderr


def test_a_bad_setting_is_refused_naming_the_variable(tmp_path: Path) -> None:
    env = {"POSTEVAL_HOME": str(tmp_path), "POSTEVAL_DEVICE": "gpu", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "posteval.cli", "runs", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "POSTEVAL_DEVICE='gpu': expected auto, cpu, mps, cuda or cuda:N" in result.stderr


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


def test_an_edited_dataset_is_loaded_again_in_the_same_process(tmp_path: Path) -> None:
    import os

    from posteval.pipeline import load

    data = tmp_path / "qa.jsonl"
    data.write_text('{"q": "x", "a": "y"}\n')
    spec = load_suite(_suite(tmp_path)).suite.datasets[0]
    first = load(spec)
    data.write_text('{"q": "x", "a": "y"}\n{"q": "w", "a": "v"}\n')
    os.utime(data, ns=(first_mtime := data.stat().st_mtime_ns + 10_000_000, first_mtime))
    second = load(spec)
    assert (len(first), len(second)) == (1, 2)
    assert second.fingerprint != first.fingerprint


def test_deployments_never_carry_the_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from posteval.flows.deployments import deployments

    suite = _suite(tmp_path)
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", "postgresql+psycopg://user:secret@db/posteval")
    built = deployments([str(suite)], task_runner="dask", dask_address="tcp://h:8786")
    assert [sorted(d.parameters) for d in built] == [
        ["dask_address", "task_runner"],
        ["dask_address", "suites", "task_runner"],
    ]


def test_a_change_of_dtype_makes_a_new_run(
    tmp_path: Path, finetuned_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from posteval.pipeline import idempotency_key, prepare_dataset
    from posteval.settings import get_settings

    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n')
    loaded = load_suite(_suite(tmp_path))
    checkpoint = resolve_checkpoint(finetuned_checkpoint)
    datasets = [prepare_dataset(spec) for spec in loaded.suite.datasets]
    fp32 = idempotency_key(checkpoint, loaded, datasets)
    monkeypatch.setenv("POSTEVAL_DTYPE", "bf16")
    get_settings.cache_clear()
    try:
        assert idempotency_key(checkpoint, loaded, datasets) != fp32
    finally:
        monkeypatch.delenv("POSTEVAL_DTYPE")
        get_settings.cache_clear()
    assert idempotency_key(checkpoint, loaded, datasets) == fp32
