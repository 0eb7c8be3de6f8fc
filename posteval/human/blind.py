"""`posteval human export`: a run's outputs as blinded, shuffled items for raters, and the key apart.

Single items are scored on the dataset's rubric (the suite's ``judge: {rubric: ...}``, read with
:class:`posteval.judges.spec.Rubric`; a dataset without one is scored ``overall`` on 1-5). Pair items show
the run's and the base run's outputs to the same prompt as ``output_a`` / ``output_b``, sides drawn at
random, to prefer ``A``, ``B`` or ``tie``. Item ids are random tokens; nothing in ``items.csv`` /
``items.jsonl`` names the run, the dataset, the example or a side. Which item is which lives only in
``key.json``, which the raters must not see.
"""

from __future__ import annotations

import csv
import json
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.errors import InputError
from posteval.judges.spec import Rubric as JudgeRubric
from posteval.views.report_data import ReportRun, load_run

DEFAULT_CRITERIA = ["overall"]  # a dataset without a judge rubric: one overall score on 1-5
DEFAULT_SCALE = [1, 2, 3, 4, 5]
SINGLE_COLUMNS = ("item", "prompt", "output")
PAIR_COLUMNS = ("item", "prompt", "output_a", "output_b", "preference")
PREFERENCES = ("A", "B", "tie")


@dataclass(frozen=True)
class Rubric:
    """What a rater scores: every criterion, on the scale's integer points."""

    criteria: list[str]
    scale: list[int]


def rubric_for(suite_source: str, dataset: str) -> Rubric:
    """The rubric of ``dataset`` in the stored suite text, or the default one (``overall``, 1-5)."""
    try:
        data = yaml.safe_load(suite_source) or {}
    except yaml.YAMLError:
        data = {}
    datasets = data.get("datasets") if isinstance(data, dict) else None
    for spec in datasets if isinstance(datasets, list) else []:
        if isinstance(spec, dict) and spec.get("name") == dataset:
            judge = spec.get("judge")
            rubric = judge.get("rubric") if isinstance(judge, dict) else None
            if isinstance(rubric, dict):  # validated when the run stored it; its defaults are the schema's
                parsed = JudgeRubric.model_validate(rubric)
                return Rubric(list(parsed.criteria), list(parsed.scale))
    return Rubric(list(DEFAULT_CRITERIA), list(DEFAULT_SCALE))


@dataclass(frozen=True)
class Export:
    """What an export wrote: the items' files, the key, and how many items."""

    items_csv: Path
    items_jsonl: Path
    key: Path
    n: int


def _generated(run: ReportRun) -> list[str]:
    """The run's datasets whose outputs are generated text (what a person can read and score)."""
    names = []
    for name in run.datasets:
        spec = run.spec(name)
        if spec is None or (spec.kind == "generate" and spec.scoring == "generate"):
            names.append(name)
    return names


def _prompts(run: ReportRun, dataset: str) -> dict[str, str]:
    examples, why = run.examples(dataset)
    if not examples:
        raise InputError(f"cannot export {dataset!r} of run {run.id}: {why or 'no inputs stored'}")
    return {key: str(text) for key, (text, _) in examples.items()}


def _candidates(run: ReportRun, base: ReportRun | None, only: str | None) -> list[dict[str, Any]]:
    """Every (dataset, example) with the run's output (and the base's, for pairs), in a stable order."""
    generated = _generated(run)
    if only is not None and only not in generated:
        raise InputError(f"run {run.id} has no dataset {only!r} of generated outputs: {', '.join(generated)}")
    found = []
    for dataset in [only] if only else generated:
        outputs, _ = run.outputs(dataset)
        base_outputs = base.outputs(dataset)[0] if base is not None and dataset in base.datasets else {}
        prompts = _prompts(run, dataset)
        for key in sorted(outputs):
            if key not in prompts or (base is not None and key not in base_outputs):
                continue
            item = {"dataset": dataset, "example": key, "prompt": prompts[key], "run": outputs[key] or ""}
            if base is not None:
                item["base"] = base_outputs[key] or ""
            found.append(item)
    if not found:
        what = (
            f"outputs of both runs {run.id} and {base.id}" if base else f"generated outputs in run {run.id}"
        )
        raise InputError(f"nothing to export: no {what}")
    return found


def stored_rubric(run_id: str, dataset: str, database_url: str | None = None) -> Rubric:
    """The rubric of ``dataset`` in the suite run ``run_id`` stored."""
    with session_scope(database_url) as session:
        return rubric_for(reads.suite_source(session, run_id) or "", dataset)


def _rubric(run: ReportRun, datasets: set[str]) -> Rubric:
    """The one rubric every exported dataset shares; datasets with different rubrics are refused."""
    with session_scope(run.url) as session:
        source = reads.suite_source(session, run.id) or ""
    rubrics = {name: rubric_for(source, name) for name in sorted(datasets)}
    distinct = {(tuple(r.criteria), tuple(r.scale)) for r in rubrics.values()}
    if len(distinct) > 1:
        raise InputError(
            f"run {run.id}: datasets {', '.join(rubrics)} have different rubrics; export one with --dataset"
        )
    rubric = next(iter(rubrics.values()))
    clash = sorted(set(rubric.criteria) & set(SINGLE_COLUMNS))
    if clash:
        raise InputError(f"rubric criteria {clash} clash with the export's own columns {SINGLE_COLUMNS}")
    return rubric


def export(
    run_id: str,
    out: Path,
    *,
    base_run_id: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    dataset: str | None = None,
    database_url: str | None = None,
) -> Export:
    """Write ``items.csv``, ``items.jsonl`` and ``key.json`` to ``out`` for run ``run_id`` (a full id):
    every dataset of generated outputs, or only ``dataset``."""
    run = load_run(run_id, database_url)
    base = load_run(base_run_id, database_url) if base_run_id else None
    candidates = _candidates(run, base, dataset)
    rng = random.Random(seed)
    if sample is not None:
        if sample <= 0:
            raise InputError(f"--sample must be positive, got {sample}")
        candidates = rng.sample(candidates, min(sample, len(candidates)))
    rng.shuffle(candidates)
    rubric = None if base else _rubric(run, {c["dataset"] for c in candidates})
    ids: set[str] = set()
    rows, key_items = [], {}
    for item in candidates:
        item_id = secrets.token_hex(6)
        while item_id in ids:  # pragma: no cover - 48 random bits
            item_id = secrets.token_hex(6)
        ids.add(item_id)
        entry = {"dataset": item["dataset"], "example": item["example"]}
        if base is None:
            rows.append(
                {"item": item_id, "prompt": item["prompt"], "output": item["run"]}
                | dict.fromkeys(rubric.criteria if rubric else [], "")
            )
        else:
            run_first = rng.random() < 0.5
            entry["a"] = "run" if run_first else "base"
            first, second = (item["run"], item["base"]) if run_first else (item["base"], item["run"])
            rows.append(
                {
                    "item": item_id,
                    "prompt": item["prompt"],
                    "output_a": first,
                    "output_b": second,
                    "preference": "",
                }
            )
        key_items[item_id] = entry
    out.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with (out / "items.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "items.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    k: (v if v != "" or k in ("prompt", "output", "output_a", "output_b") else None)
                    for k, v in row.items()
                }
            )
            + "\n"
            for row in rows
        ),
        encoding="utf-8",
    )
    key = {
        "export": secrets.token_hex(8),
        "run": run.id,
        "base_run": base.id if base else None,
        "kind": "pair" if base else "score",
        "rubric": {"criteria": rubric.criteria, "scale": rubric.scale} if rubric else None,
        "items": key_items,
    }
    (out / "key.json").write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
    return Export(out / "items.csv", out / "items.jsonl", out / "key.json", len(rows))
