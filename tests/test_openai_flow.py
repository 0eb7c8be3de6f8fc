"""A served model (openai:MODEL@URL) goes through the same flow, and agrees with the local folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from posteval.db import queries
from posteval.errors import CheckpointError
from posteval.flows.post_training import evaluate_checkpoint
from posteval.inputs.checkpoint import resolve_checkpoint
from tests.helpers import heldout_rows, write_jsonl
from tests.openai_server import OpenAIServer

SUITE = """\
name: served
allow_incomplete: true  # a focused test suite, not a full evaluation
generation: {max_new_tokens: 4, batch_size: 3}
datasets:
  - name: clauses
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    metrics: [accuracy]
  - name: choice
    path: clauses.jsonl
    prompt: "Clause: {text}\\nType:"
    reference: label
    labels: [lease, nda, employment]
    scoring: loglikelihood
    metrics: [accuracy]
"""


def test_served_model_scores_like_the_same_local_checkpoint(
    prefect_harness: None, finetuned_checkpoint: Path, tmp_path: Path, sqlite_url: str
) -> None:
    write_jsonl(tmp_path / "clauses.jsonl", heldout_rows(9))
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    with OpenAIServer(finetuned_checkpoint, model_name="contracts") as server:
        served = evaluate_checkpoint(
            checkpoint=f"openai:contracts@{server.base_url}", suite=str(suite), database_url=sqlite_url
        )
    local = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(suite), database_url=sqlite_url
    )
    assert queries.run_summary(served, database_url=sqlite_url)["checkpoint"] == (
        f"openai:contracts@{server.base_url}"  # stored so that resolve_checkpoint accepts it back
    )
    served_metrics = queries.run_metrics(served, database_url=sqlite_url)
    local_metrics = queries.run_metrics(local, database_url=sqlite_url)
    assert served_metrics[["dataset", "name", "value"]].to_dict("records") == (
        local_metrics[["dataset", "name", "value"]].to_dict("records")
    )


def test_served_model_spec_must_name_model_and_url() -> None:
    with pytest.raises(CheckpointError, match=r"expected openai:MODEL@http://host:port/v1"):
        resolve_checkpoint("openai:just-a-name")
