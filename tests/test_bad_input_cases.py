"""Issue 13, point by point: each bad input it names is answered in one line (exit 2) before a row exists."""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner, Result

from posteval.cli import app
from posteval.errors import CheckpointError, DatasetError, SuiteError
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.inputs.data import load_dataset
from posteval.inputs.preflight import preflight
from posteval.inputs.suite import load_suite
from posteval.pipeline import register_run
from posteval.settings import get_settings
from tests.helpers import small_suite

SUITE = """\
name: cases
datasets:
  - name: task
    path: {path}
    prompt: "Q: {{question}}\\nA:"
    reference: answer
    metrics: [exact_match]
  - name: general
    path: general.jsonl
    kind: perplexity
    general: true
    metrics: [perplexity]
training_health: {{max_gap: 0.3}}
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A suite folder with valid data, and a database path that must never be created."""
    (tmp_path / "task.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (tmp_path / "general.jsonl").write_text('{"text": "general text"}\n')
    (tmp_path / "suite.yaml").write_text(SUITE.format(path="task.jsonl"))
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _refused(result: Result, folder: Path) -> str:
    """The one error line of an exit-2 answer that wrote no database."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not (folder / "never.db").exists()
    return lines[0].removeprefix("error: ")


def _evaluate(folder: Path, checkpoint: Path | str) -> Result:
    return CliRunner().invoke(app, ["evaluate", str(checkpoint), "--suite", str(folder / "suite.yaml")])


def _copy(base: Path, folder: Path) -> Path:
    return Path(shutil.copytree(base, folder / "model"))


# --- 1. architecture against weights --------------------------------------------------------------


def test_config_of_another_architecture_fails_naming_the_weights(env: Path, base_checkpoint: Path) -> None:
    model = _copy(base_checkpoint, env)
    config = json.loads((model / "config.json").read_text())
    config.update(
        model_type="bert",
        architectures=["BertForMaskedLM"],
        hidden_size=64,
        num_attention_heads=2,
        num_hidden_layers=2,
        intermediate_size=128,
    )
    (model / "config.json").write_text(json.dumps(config))
    message = _refused(_evaluate(env, model), env)
    # The reference: transformers' own report of a full (not meta) load of the same folder.
    _, report = AutoModelForCausalLM.from_pretrained(str(model), output_loading_info=True)
    missing, unexpected = sorted(report["missing_keys"]), sorted(report["unexpected_keys"])
    assert missing and unexpected
    assert message.startswith(
        f"checkpoint {model}: the weights do not fit BertLMHeadModel (config.json model_type 'bert'): "
        f"weights {len(missing)} missing ({', '.join(missing[:5])} and {len(missing) - 5} more); "
        f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])} and {len(unexpected) - 5} more)"
    )


def test_weights_the_architecture_ties_are_not_missing(base_checkpoint: Path) -> None:
    info = resolve_checkpoint(base_checkpoint)
    assert "lm_head.weight" not in _saved_keys(base_checkpoint)  # tied to the embeddings, never saved
    preflight(info)  # passes


def _saved_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return set(handle.keys())


def test_the_runner_refuses_a_shape_mismatch_too(tmp_path: Path, base_checkpoint: Path) -> None:
    from posteval.runners.hf import HFRunner

    model = _copy(base_checkpoint, tmp_path)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(CheckpointError, match=r"the weights do not fit: 12 missing \(transformer\.h\.2\."):
        HFRunner(resolve_checkpoint(model), device="cpu")


# --- 2. problems that were found only after the run row existed -----------------------------------


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("zero", "model.safetensors is 0 bytes long, too short for a safetensors header"),
        (
            "truncate",
            "model.safetensors is truncated or damaged (its header describes {size} bytes; "
            "the file has {cut})",
        ),
        ("tokenizer", "the tokenizer does not load: "),
        (
            "no_tokenizer",
            "no tokenizer files (expected one of tokenizer.json, tokenizer.model, vocab.json, "
            "vocab.txt, spiece.model); save the tokenizer with the model (tokenizer.save_pretrained)",
        ),
        (
            "model_type",
            "cannot load the model: The checkpoint you are trying to load has model type "
            "`frobnicator` but Transformers does not recognize this architecture",
        ),
    ],
)
def test_damaged_checkpoints_are_refused_before_a_row(
    env: Path, base_checkpoint: Path, damage: str, expected: str
) -> None:
    model = _copy(base_checkpoint, env)
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    if damage == "zero":
        weights.write_bytes(b"")
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: size // 2])
    elif damage == "tokenizer":
        (model / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    elif damage == "no_tokenizer":
        (model / "tokenizer.json").unlink()
    else:
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator"}))
    message = _refused(_evaluate(env, model), env)
    assert message.startswith(f"checkpoint {model}: " + expected.format(size=size, cut=size // 2))


def test_the_flow_s_resolve_task_runs_the_same_checks(tmp_path: Path, base_checkpoint: Path) -> None:
    from posteval.tasks.resolve import resolve_checkpoint_task

    model = _copy(base_checkpoint, tmp_path)
    (model / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is 0 bytes long"):
        resolve_checkpoint_task.fn(str(model))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_on_a_cpu_machine(
    env: Path, base_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTEVAL_DEVICE", "cuda")
    get_settings.cache_clear()
    assert _refused(_evaluate(env, base_checkpoint), env) == (
        f"POSTEVAL_DEVICE=cuda: this machine has no CUDA device (torch {torch.__version__} sees none); "
        "use auto or cpu"
    )


def test_an_unset_api_key_variable(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTEVAL_OPENAI_API_KEY_ENV", "POSTEVAL_TEST_KEY_NOBODY_SETS")
    monkeypatch.delenv("POSTEVAL_TEST_KEY_NOBODY_SETS", raising=False)
    get_settings.cache_clear()
    assert _refused(_evaluate(env, "openai:tiny@http://127.0.0.1:9/v1"), env) == (
        "POSTEVAL_OPENAI_API_KEY_ENV names the variable POSTEVAL_TEST_KEY_NOBODY_SETS, which is not set: "
        "export POSTEVAL_TEST_KEY_NOBODY_SETS with the endpoint's API key"
    )


# --- 3. suites ------------------------------------------------------------------------------------


def test_duplicate_yaml_keys_name_both_lines(env: Path) -> None:
    path = env / "suite.yaml"
    path.write_text(
        SUITE.format(path="task.jsonl").replace(
            "    reference: answer\n", "    reference: answer\n    reference: other\n"
        )
    )
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value) == f"{path}:7: duplicate key 'reference' on lines 6 and 7; each key once"


@pytest.mark.parametrize("placeholder", ["{question:>99999999999}", "{question!r}"])
def test_format_specs_and_conversions_are_refused(env: Path, placeholder: str) -> None:
    path = env / "suite.yaml"
    path.write_text(SUITE.format(path="task.jsonl").replace("Q: {question}", f"Q: {placeholder}"))
    message = _refused(_evaluate(env, "openai:m@http://127.0.0.1:9/v1"), env)
    assert message == (
        f"{path}: datasets[0].prompt: placeholder {placeholder!r} has a format spec or conversion; "
        f"write it as {{question}} (got 'Q: {placeholder}\\nA:')"
    )


# --- 3. dataset files -----------------------------------------------------------------------------


def _task(env: Path, name: str = "task.jsonl"):  # type: ignore[no-untyped-def]
    (env / "suite.yaml").write_text(SUITE.format(path=name))
    return load_suite(env / "suite.yaml").suite.datasets[0]


def test_invalid_utf8_names_file_and_line(env: Path) -> None:
    rows = b"".join(b'{"question": "q%d", "answer": "a"}\n' % i for i in range(56))
    (env / "task.jsonl").write_bytes(rows + b'{"question": "caf\xe9", "answer": "a"}\n')
    with pytest.raises(DatasetError) as info:
        load_dataset(_task(env))
    assert str(info.value) == (
        f"dataset 'task': {env / 'task.jsonl'}:57: not valid UTF-8 (byte 0xe9 at column 18); "
        "save the file as UTF-8"
    )


def test_an_empty_file_says_so(env: Path) -> None:
    (env / "task.jsonl").write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        load_dataset(_task(env))
    assert (
        str(info.value)
        == f"dataset 'task': {env / 'task.jsonl'} is empty (expected one JSON object per line)"
    )


def test_a_ragged_csv_names_the_line_and_logs_nothing(
    env: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (env / "task.csv").write_text('question,answer\nq1,a1\n"multi\nline",a2\nq3,a3,extra\n')
    with caplog.at_level(logging.DEBUG), pytest.raises(DatasetError) as info:
        load_dataset(_task(env, "task.csv"))
    assert str(info.value) == f"dataset 'task': {env / 'task.csv'}:5: 3 field(s), the header (line 1) names 2"
    assert capfd.readouterr().err == ""
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_corrupt_parquet_file_is_named_and_logs_nothing(
    env: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (env / "task.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetError) as info:
        load_dataset(_task(env, "task.parquet"))
    assert str(info.value).startswith(
        f"dataset 'task': {env / 'task.parquet'} is not a readable Parquet file ("
    )
    assert capfd.readouterr().err == ""


def test_csv_rows_match_pandas_read_as_text(env: Path) -> None:
    """The line-aware reader gives what pandas gives (as text; an empty cell missing), and each row's line."""
    import pandas as pd

    from posteval.inputs.readers import read_csv

    (env / "task.csv").write_text('question,answer\n"a, b",1\n"multi\nline",\nq3,a3\n')
    frame = pd.read_csv(env / "task.csv", dtype=str, keep_default_na=False)
    rows, lines = read_csv("task", env / "task.csv")
    assert [{k: v or "" for k, v in row.items()} for row in rows] == frame.to_dict("records")
    assert rows[1]["answer"] is None
    assert lines == [2, 3, 5]


@pytest.mark.parametrize(
    ("value", "shown"), [(["a", "b"], "list ['a', 'b']"), (7, "int 7"), (1.5, "float 1.5")]
)
def test_a_list_or_number_is_not_turned_into_prompt_text(env: Path, value: object, shown: str) -> None:
    (env / "task.jsonl").write_text(
        '{"question": "q", "answer": "a"}\n' + json.dumps({"question": value, "answer": "a"}) + "\n"
    )
    with pytest.raises(DatasetError) as info:
        load_dataset(_task(env))
    assert str(info.value) == (
        f"dataset 'task': {env / 'task.jsonl'}:2: field 'question' is {shown}, "
        "expected text (a string; quote it if you mean text)"
    )


# --- 3. settings and CLI options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql+nosuch://u:secret@h/d", "unsupported database 'mysql+nosuch'"),
        ("postgresql+nosuch://u:secret@h/d", "no installed driver for 'postgresql+nosuch'"),
        ("not a url", "not a database URL"),
    ],
)
def test_a_bad_database_url_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", url)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["runs", "list"])
    get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.output.startswith(
        f"error: bad setting: POSTEVAL_DATABASE_URL: {expected} (expected sqlite:///"
    )
    assert len(result.output.strip().splitlines()) == 1 and "secret" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["runs", "list", "--status", "bogus"],
            "--status 'bogus': expected one of pending, running, succeeded, failed",
        ),
        (["runs", "list", "--limit", "-5"], "--limit -5: expected a positive number of runs"),
        (
            ["runs", "list", "--since", "99999999999d"],
            "--since '99999999999d': reaches back before the year 1 (give a shorter duration or a date)",
        ),
        (
            ["history", "accuracy", "--model", "m", "--plot", "{tmp}/file.txt/trend.png"],
            "--plot {tmp}/file.txt/trend.png: the folder {tmp}/file.txt does not exist",
        ),
        (
            ["history", "accuracy", "--model", "m", "--plot", "{tmp}"],
            "--plot {tmp}: is a folder; give a file name",
        ),
    ],
)
def test_cli_options_are_checked_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    (tmp_path / "file.txt").write_text("")
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {expected.format(tmp=tmp_path)}"]
    assert not (tmp_path / "never.db").exists()


def test_a_plot_that_cannot_be_written_is_exit_2_not_a_traceback(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import pandas as pd

    import posteval.views.plots
    from posteval.db import queries

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setenv("POSTEVAL_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    monkeypatch.setattr(
        queries, "metric_history", lambda *a, **k: pd.DataFrame({"step": [1], "value": [0.5]})
    )
    monkeypatch.setattr(posteval.views.plots, "metric_trend_png", refuse)
    result = CliRunner().invoke(
        app, ["history", "accuracy", "--model", "m", "--plot", str(tmp_path / "t.png")]
    )
    get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --plot {tmp_path / 't.png'}: cannot write it: Permission denied"
    ]


def test_run_id_prefixes_match_percent_and_underscore_literally(env: Path, base_checkpoint: Path) -> None:
    from posteval.db.migrate import upgrade
    from posteval.db.queries import resolve_run_id
    from posteval.errors import InputError
    from posteval.pipeline import prepare_dataset

    url = f"sqlite:///{env / 'runs.db'}"
    upgrade(url)
    loaded = load_suite(env / "suite.yaml")
    datasets = [prepare_dataset(spec) for spec in loaded.suite.all_datasets()]
    run = register_run(
        resolve_checkpoint(base_checkpoint), loaded, datasets, trigger="manual", database_url=url
    )
    assert resolve_run_id(run.run_id[:6], database_url=url) == run.run_id
    for prefix in ("%%%%", "____", run.run_id[:2] + "%"):  # as LIKE wildcards, each would match the run
        with pytest.raises(InputError, match=rf"^no run with id '{prefix}'"):
            resolve_run_id(prefix, database_url=url)


# --- 3. database revisions ------------------------------------------------------------------------


def _versioned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revision: str | None = None) -> Path:
    from posteval.db.migrate import upgrade

    path = tmp_path / "versioned.db"
    upgrade(f"sqlite:///{path}")
    if revision:
        connection = sqlite3.connect(path)
        connection.execute("update alembic_version set version_num = ?", (revision,))
        connection.commit()
        connection.close()
    monkeypatch.setenv("POSTEVAL_DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    return path


def _revision(path: Path) -> str:
    connection = sqlite3.connect(path)
    (revision,) = connection.execute("select version_num from alembic_version").fetchone()
    connection.close()
    return str(revision)


def test_upgrading_to_an_older_revision_does_not_claim_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic.script import ScriptDirectory

    from posteval.db.migrate import alembic_config

    path = _versioned(tmp_path, monkeypatch)
    head = ScriptDirectory.from_config(alembic_config(f"sqlite:///{path}")).get_current_head()
    result = CliRunner().invoke(app, ["db", "upgrade", "0001"])
    get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: the database at sqlite:///{path} is at revision {head}, newer than 0001: "
        "`db upgrade` never goes back (nothing was changed)"
    ]
    assert _revision(path) == head


@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade"],
        ["runs", "list"],
        ["runs", "show", "abcd"],
        ["history", "accuracy", "-m", "m"],
        ["baseline", "list"],
        ["report", "abcd"],
        ["compare", "abcd", "efgh"],
    ],
)
def test_an_unknown_newer_revision_is_one_line_from_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    path = _versioned(tmp_path, monkeypatch, "9999")
    result = CliRunner().invoke(app, args)
    get_settings.cache_clear()
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: the database at sqlite:///{path} is at revision '9999', which this posteval does not know "
        "(it knows 0001"
    )
    assert lines[0].endswith("): it was migrated by a newer posteval; upgrade posteval")
    assert _revision(path) == "9999"


# --- 3. the rule-of-three warning -----------------------------------------------------------------


def test_the_rule_of_three_warning_is_said_once(env: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = env / "suite.yaml"
    path.write_text(
        SUITE.format(path="task.jsonl").replace(
            "training_health: {max_gap: 0.3}\n", "allow_incomplete: true\n"
        )
    )
    with caplog.at_level(logging.WARNING, logger="posteval.inputs.suite"):
        load_suite(path)  # the CLI's check
        load_suite(path)  # the flow's load
    assert [r.getMessage() for r in caplog.records].count(
        f"{path}: the suite lacks an overfitting detector (a 'training_health' section: train vs validation "
        "loss gap) (allowed by allow_incomplete: true)"
    ) == 1


def test_a_cuda_index_beyond_the_machine_s_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from posteval.errors import InputError
    from posteval.inputs.preflight import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(InputError) as info:
        check_device("cuda:2")
    assert str(info.value) == "POSTEVAL_DEVICE=cuda:2: this machine has 2 CUDA device(s), cuda:0 to cuda:1"


@pytest.mark.parametrize(("metric", "raised"), [(":f", "Empty module name"), (".rel:f", "relative import")])
def test_a_custom_metric_that_cannot_be_imported_is_a_suite_error(
    env: Path, metric: str, raised: str
) -> None:
    path = env / "suite.yaml"
    path.write_text(SUITE.format(path="task.jsonl").replace("[exact_match]", f"['{metric}']"))
    with pytest.raises(
        SuiteError,
        match=rf"^{path}: datasets\[0\]\.metrics\[0\]: cannot import custom metric "
        rf"'{re.escape(metric)}': .*{raised}",
    ):
        load_suite(path)


def test_jsonl_errors_name_the_file_line_past_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text('{"q": "x", "a": "y"}\n\n\n{"a": "z"}\n')
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'qa.jsonl'}:4: missing field\(s\) \['q'\]"):
        load_dataset(load_suite(small_suite(tmp_path)).suite.datasets[0])


def test_csv_errors_name_the_file_line_after_the_header(tmp_path: Path) -> None:
    (tmp_path / "qa.csv").write_text("q,a\nx,y\n,z\n")
    path = small_suite(tmp_path)
    path.write_text(path.read_text().replace("qa.jsonl", "qa.csv"))
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'qa.csv'}:3: missing field\(s\) \['q'\]"):
        load_dataset(load_suite(path).suite.datasets[0])


def test_an_overlong_key_is_refused_before_it_reaches_the_database(tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text(json.dumps({"q": "x", "a": "y", "id": "k" * 300}) + "\n")
    path = small_suite(tmp_path)
    path.write_text(path.read_text().replace("    reference: a\n", "    reference: a\n    key: id\n"))
    with pytest.raises(DatasetError, match=r"key field 'id' is 300 characters long \(at most 255\)"):
        load_dataset(load_suite(path).suite.datasets[0])
