"""The nightly flow re-evaluates each model's latest checkpoint from the cache and says what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from posteval.db.migrate import upgrade
from posteval.db.queries import run_metrics, run_summary
from posteval.flows.nightly import ARTIFACT_KEY, nightly
from posteval.flows.post_training import evaluate_checkpoint
from posteval.inputs.checkpoint import resolve_checkpoint
from posteval.judging import nightly as night
from posteval.judging.baseline import set_baseline
from posteval.runners.hf import HFRunner
from tests.helpers import heldout_rows, write_jsonl

SUITE = """\
name: {name}
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {{max_new_tokens: 6, stop: ["\\n"], batch_size: 8}}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    labels: [lease, nda, employment]
    metrics: [accuracy]
"""


@pytest.fixture(scope="module")
def history(
    prefect_harness: None,
    base_checkpoint: Path,
    finetuned_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Model "m": its base evaluated on the nightly suite, its fine-tune only on another suite so far."""
    folder = tmp_path_factory.mktemp("nightly")
    write_jsonl(folder / "clauses.jsonl", heldout_rows(12))
    for name in ("nightly", "earlier"):
        (folder / f"{name}.yaml").write_text(SUITE.format(name=name))
    url = f"sqlite:///{folder / 'nightly.db'}"
    upgrade(url)
    base_run = evaluate_checkpoint(
        checkpoint=str(base_checkpoint), suite=str(folder / "nightly.yaml"), model_name="m", database_url=url
    )
    evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint),
        suite=str(folder / "earlier.yaml"),
        model_name="m",
        database_url=url,
    )
    step = resolve_checkpoint(finetuned_checkpoint).training_step
    return {"url": url, "suite": str(folder / "nightly.yaml"), "base_run": base_run, "step": step}


def _latest_artifact() -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[ARTIFACT_KEY]))
        )
    return str(found[0].data)


def test_the_first_night_evaluates_the_latest_checkpoint_from_cached_outputs_and_compares_it(
    history: dict[str, Any], finetuned_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model_calls(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model ran although every output was cached")

    monkeypatch.setattr(HFRunner, "generate", no_model_calls)
    [row] = nightly(suites=[history["suite"]], database_url=history["url"])
    base = run_metrics(history["base_run"], database_url=history["url"]).iloc[0]
    tonight = run_metrics(row["run_id"], database_url=history["url"]).iloc[0]
    [change] = row["changes"]
    checkpoint = str(finetuned_checkpoint)
    assert (row["model"], row["checkpoint"], row["step"], row["suite"]) == (
        "m",
        checkpoint,
        history["step"],
        "nightly",
    )
    assert (row["status"], row["previous_run_id"], row["pinned"]) == ("evaluated", history["base_run"], False)
    assert (change["metric"], change["baseline"], change["candidate"]) == (
        "accuracy",
        base.value,
        tonight.value,
    )
    assert change["delta"] == pytest.approx(tonight.value - base.value)
    markdown = _latest_artifact()
    assert markdown.startswith("# posteval nightly: what changed the first night\n")
    run, previous = row["run_id"][:12], history["base_run"][:12]
    assert f"| m | {history['step']} | nightly | evaluated | {run} | {previous} |  |" in markdown
    assert "| clauses | accuracy |" in markdown


def test_the_next_night_finds_nothing_changed(history: dict[str, Any]) -> None:
    first = nightly(suites=[history["suite"]], database_url=history["url"])  # the night above, if run alone
    [row] = nightly(suites=[history["suite"]], database_url=history["url"])
    assert (row["status"], row["run_id"], row["changes"]) == ("unchanged", first[0]["run_id"], [])
    markdown = _latest_artifact()
    assert markdown.startswith("# posteval nightly: what changed since ")
    assert f"| m | {history['step']} | nightly | unchanged | {row['run_id'][:12]} | - |  |" in markdown


def test_a_pinned_baseline_is_evaluated_first_and_only_on_its_suite(
    history: dict[str, Any], base_checkpoint: Path, finetuned_checkpoint: Path
) -> None:
    set_baseline("m", "nightly", checkpoint_path=str(base_checkpoint.resolve()), database_url=history["url"])
    assert night.targets(database_url=history["url"]) == [
        night.Target("m", str(base_checkpoint.resolve()), None, "nightly"),
        night.Target("m", str(finetuned_checkpoint.resolve()), history["step"]),
    ]
    rows = nightly(suites=[history["suite"]], database_url=history["url"])
    assert [(r["pinned"], r["status"]) for r in rows] == [(True, "unchanged"), (False, "unchanged")]
    assert rows[0]["run_id"] == history["base_run"]


def test_no_suites_is_refused(prefect_harness: None) -> None:
    with pytest.raises(Exception, match="nightly: no suites given"):
        nightly(suites=[], database_url="sqlite://")


GATED = """\
name: {name}
allow_incomplete: true
generation: {{max_new_tokens: 4, batch_size: 16}}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    labels: [lease, nda, employment]
    metrics: [accuracy]
gates:
  clauses/accuracy: {{max_drop: 0.02, alpha: 0.05}}
"""


@pytest.fixture(scope="module")
def regressed(
    prefect_harness: None,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Model "r" on suite "gated": the fine-tune, then the overfit checkpoint whose gate failed; model "s"
    only on suite "elsewhere"."""
    from posteval.errors import GateFailed

    folder = tmp_path_factory.mktemp("regressed")
    write_jsonl(folder / "clauses.jsonl", heldout_rows(54))
    for name in ("gated", "elsewhere"):
        (folder / f"{name}.yaml").write_text(GATED.format(name=name))
    url = f"sqlite:///{folder / 'regressed.db'}"
    upgrade(url)
    gated = {"suite": str(folder / "gated.yaml"), "model_name": "r", "database_url": url}
    good = evaluate_checkpoint(checkpoint=str(finetuned_checkpoint), **gated)
    with pytest.raises(GateFailed) as failed:
        evaluate_checkpoint(checkpoint=str(overfit_checkpoint), **gated)
    elsewhere = {"suite": str(folder / "elsewhere.yaml"), "model_name": "s", "database_url": url}
    evaluate_checkpoint(checkpoint=str(finetuned_checkpoint), **elsewhere)
    return {"url": url, "folder": folder, "good": good, "bad": failed.value.run_id}


def test_a_run_already_gated_keeps_its_verdict_and_is_unchanged(
    regressed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from posteval import pipeline

    url, bad = regressed["url"], regressed["bad"]
    before = run_summary(bad, database_url=url)

    def no_gate(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run that was already gated was gated again")

    monkeypatch.setattr(pipeline, "gate", no_gate)
    for _ in range(2):  # night after night: no new failure
        [row] = nightly(suites=[str(regressed["folder"] / "gated.yaml")], models=["r"], database_url=url)
        assert (row["run_id"], row["status"]) == (bad, "unchanged")
        kept = f"gate failed before tonight (kept, not counted again): {before['gate_summary']}"
        assert row["note"] == kept
    after = run_summary(bad, database_url=url)
    assert (after["gate_status"], after["gate_summary"]) == ("failed", before["gate_summary"])
    assert "| r | " in _latest_artifact() and "| unchanged |" in _latest_artifact()


def test_each_model_is_evaluated_only_on_the_suites_it_was_evaluated_on(regressed: dict[str, Any]) -> None:
    folder = regressed["folder"]
    suites = {str(folder / "gated.yaml"): "gated", str(folder / "elsewhere.yaml"): "elsewhere"}
    planned = night.plan(suites, database_url=regressed["url"])
    assert [(t.model, suites[path]) for t, path in planned] == [("r", "gated"), ("s", "elsewhere")]
    rows = nightly(suites=list(suites), models=["s"], database_url=regressed["url"])
    assert [(r["model"], r["suite"], r["status"]) for r in rows] == [("s", "elsewhere", "unchanged")]
