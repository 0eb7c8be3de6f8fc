"""The nightly flow re-evaluates each model's latest checkpoint from the cache and says what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from posteval.db.migrate import upgrade
from posteval.db.queries import run_metrics
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
