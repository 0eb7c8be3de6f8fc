"""Human evaluation: blinded export, label import (round trip, refusals), human metrics in the database."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from posteval.db import reads
from posteval.db.engine import session_scope
from posteval.errors import InputError
from posteval.human.blind import export, rubric_for
from posteval.human.store import import_labels
from tests.human_fixtures import RUBRIC, SUITE, store_run


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _fill(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _labels(url: str, run_id: str, kind: str) -> list[tuple[str, str, str, str, float, str | None]]:
    with session_scope(url) as session:
        return reads.human_labels(session, run_id, kind=kind)


def test_export_blinds_items_shuffles_them_and_keeps_the_key_apart(db_url: str, tmp_path: Path) -> None:
    run = store_run(db_url, tmp_path / "data")
    written = export(run.id, tmp_path / "out", database_url=db_url, seed=3)
    rows = _csv(written.items_csv)
    jsonl = [json.loads(line) for line in written.items_jsonl.read_text().splitlines()]
    key = json.loads(written.key.read_text())
    assert [r["item"] for r in rows] == [r["item"] for r in jsonl] == list(key["items"])
    assert list(rows[0]) == ["item", "prompt", "output", "overall"]  # the default rubric: overall on 1-5
    assert key["rubric"] == {"criteria": ["overall"], "scale": [1, 2, 3, 4, 5]}
    exported = [key["items"][r["item"]]["example"] for r in rows]
    assert sorted(exported) == sorted(run.keys) and exported != sorted(run.keys)  # all of them, shuffled
    for row in rows:
        example = key["items"][row["item"]]["example"]
        assert row["output"] == run.outputs[example] and row["prompt"] == f"Q: question {example}"
        assert re.fullmatch("[0-9a-f]{12}", row["item"])  # a random token, nothing of run or example
    items_text = written.items_csv.read_text() + written.items_jsonl.read_text()
    assert run.id not in items_text and "qa" not in items_text  # neither run nor dataset named
    again = export(run.id, tmp_path / "again", database_url=db_url, seed=3)
    assert set(json.loads(again.key.read_text())["items"]).isdisjoint(key["items"])  # ids: random tokens


def test_pair_export_shuffles_sides_and_only_the_key_says_which(db_url: str, tmp_path: Path) -> None:
    base = store_run(db_url, tmp_path / "data", n=40)
    run = store_run(db_url, tmp_path / "data", n=40)
    written = export(run.id, tmp_path / "out", base_run_id=base.id, database_url=db_url, seed=1)
    rows = _csv(written.items_csv)
    key = json.loads(written.key.read_text())
    assert list(rows[0]) == ["item", "prompt", "output_a", "output_b", "preference"]
    sides = []
    for row in rows:
        entry = key["items"][row["item"]]
        run_side = row["output_a"] if entry["a"] == "run" else row["output_b"]
        base_side = row["output_b"] if entry["a"] == "run" else row["output_a"]
        assert (run_side, base_side) == (run.outputs[entry["example"]], base.outputs[entry["example"]])
        sides.append(entry["a"])
    assert 0 < sides.count("run") < len(sides)  # both sides occur in position A
    assert key["base_run"] == base.id and key["kind"] == "pair"


def test_sample_draws_n_items_reproducibly_by_seed(db_url: str, tmp_path: Path) -> None:
    run = store_run(db_url, tmp_path / "data", n=20)

    def examples(folder: str, seed: int) -> list[str]:
        written = export(run.id, tmp_path / folder, sample=5, seed=seed, database_url=db_url)
        key = json.loads(written.key.read_text())
        return [key["items"][r["item"]]["example"] for r in _csv(written.items_csv)]

    first = examples("a", 7)
    assert len(first) == 5 and first == examples("b", 7) and first != examples("c", 8)


def test_round_trip_stores_labels_per_example_and_human_metrics_with_rater_agreement(
    db_url: str, tmp_path: Path
) -> None:
    run = store_run(db_url, tmp_path / "data")
    written = export(run.id, tmp_path / "out", database_url=db_url)
    rows = _csv(written.items_csv)
    key = json.loads(written.key.read_text())
    ann = {key["items"][r["item"]]["example"]: i % 5 + 1 for i, r in enumerate(rows)}
    bob = {example: min(5, score + 1) for example, score in ann.items()}
    _fill(tmp_path / "ann.csv", [r | {"overall": str(ann[key["items"][r["item"]]["example"]])} for r in rows])
    _fill(tmp_path / "bob.csv", [r | {"overall": str(bob[key["items"][r["item"]]["example"]])} for r in rows])
    (tmp_path / "ann.csv").rename(tmp_path / "out" / "ann.csv")
    (tmp_path / "bob.csv").rename(tmp_path / "out" / "bob.csv")
    first = import_labels(tmp_path / "out" / "ann.csv", rater="ann", database_url=db_url)
    assert first.labels == len(rows) and first.metrics["qa"].details["krippendorff_alpha"] is None
    second = import_labels(tmp_path / "out" / "bob.csv", rater="bob", database_url=db_url)
    stored = _labels(db_url, run.id, "score")
    assert sorted((k, r, v) for _, k, r, _, v, _ in stored) == sorted(
        [(k, "ann", float(v)) for k, v in ann.items()] + [(k, "bob", float(v)) for k, v in bob.items()]
    )
    result = second.metrics["qa"]
    expected = {k: (ann[k] + bob[k]) / 2 for k in ann}
    assert result.value == pytest.approx(sum(expected.values()) / len(expected))
    assert result.details["raters"] == {
        "ann": {"value": pytest.approx(sum(ann.values()) / len(ann)), "n": len(ann)},
        "bob": {"value": pytest.approx(sum(bob.values()) / len(bob)), "n": len(bob)},
    }
    from posteval.human.agreement import krippendorff_alpha

    keys = sorted(ann)
    assert result.details["krippendorff_alpha"] == pytest.approx(
        krippendorff_alpha([[ann[k] for k in keys], [bob[k] for k in keys]], level="ordinal")
    )
    with session_scope(db_url) as session:
        scores = reads.example_scores(session, run.id, metric="human_score")
        metrics = {m.name: m for _, m in reads.metric_rows(session, run.id)}
    assert sorted((k, v) for _, _, k, v in scores) == sorted(expected.items())
    assert metrics["human_score"].value == pytest.approx(result.value)
    assert metrics["human_score"].ci_low is not None and metrics["human_score"].n == len(keys)


def test_pair_import_unblinds_preferences_into_the_runs_win_rate(db_url: str, tmp_path: Path) -> None:
    base = store_run(db_url, tmp_path / "data")
    run = store_run(db_url, tmp_path / "data")
    written = export(run.id, tmp_path / "out", base_run_id=base.id, database_url=db_url)
    rows = _csv(written.items_csv)
    key = json.loads(written.key.read_text())
    # the rater prefers the run's output on every item but the first, which is a tie
    prefs = ["tie"] + [("A" if key["items"][r["item"]]["a"] == "run" else "B") for r in rows[1:]]
    _fill(tmp_path / "out" / "p.csv", [r | {"preference": p} for r, p in zip(rows, prefs, strict=True)])
    imported = import_labels(tmp_path / "out" / "p.csv", rater="ann", database_url=db_url)
    result = imported.metrics["qa"]
    assert result.name == "human_win_rate"
    assert result.value == pytest.approx((len(rows) - 1 + 0.5) / len(rows))
    assert sorted(v for *_, v, _ in _labels(db_url, run.id, "pair")) == [0.5] + [1.0] * (len(rows) - 1)
    assert {b for *_, b in _labels(db_url, run.id, "pair")} == {base.id}


def _exported(db_url: str, tmp_path: Path) -> tuple[str, list[dict[str, str]]]:
    run = store_run(db_url, tmp_path / "data")
    written = export(run.id, tmp_path / "out", database_url=db_url)
    return run.id, _csv(written.items_csv)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows[2].update(item="0123abcd"), "line 4: unknown item '0123abcd'"),
        (
            lambda rows: rows[3].update(overall="6"),
            "line 5: field 'overall': '6' is not on the rubric's scale",
        ),
        (
            lambda rows: rows[1].update(overall="good"),
            "line 3: field 'overall': 'good' is not on the rubric's",
        ),
        (lambda rows: rows.append(dict(rows[0])), "line 8: item '{first}' labelled twice (first on line 2)"),
    ],
)
def test_a_malformed_import_is_refused_naming_its_line_and_stores_nothing(
    db_url: str, tmp_path: Path, change: object, message: str
) -> None:
    run_id, rows = _exported(db_url, tmp_path)
    filled = [r | {"overall": "3"} for r in rows]
    change(filled)  # type: ignore[operator]
    path = _fill(tmp_path / "out" / "filled.csv", filled)
    with pytest.raises(
        InputError, match=message.format(first=rows[0]["item"]).replace("(", r"\(").replace(")", r"\)")
    ) as err:
        import_labels(path, rater="ann", database_url=db_url)
    assert str(path) in str(err.value)
    assert _labels(db_url, run_id, "score") == []


def test_a_second_import_of_the_same_rater_is_refused_and_keeps_the_first(
    db_url: str, tmp_path: Path
) -> None:
    run_id, rows = _exported(db_url, tmp_path)
    path = _fill(tmp_path / "out" / "filled.csv", [r | {"overall": "4"} for r in rows])
    import_labels(path, rater="ann", database_url=db_url)
    again = _fill(tmp_path / "out" / "again.csv", [r | {"overall": "1"} for r in rows])
    with pytest.raises(InputError, match=r"again.csv line 2: rater 'ann' already labelled this item"):
        import_labels(again, rater="ann", database_url=db_url)
    assert {v for *_, v, _ in _labels(db_url, run_id, "score")} == {4.0}


def test_jsonl_import_names_a_line_that_is_not_json_and_skips_blank_rows(db_url: str, tmp_path: Path) -> None:
    _, rows = _exported(db_url, tmp_path)
    lines = [json.dumps(r | {"overall": 2 if i else None}) for i, r in enumerate(rows)]
    good = tmp_path / "out" / "good.jsonl"
    good.write_text("\n".join(lines) + "\n")
    bad = tmp_path / "out" / "bad.jsonl"
    bad.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl line 3: not JSON"):
        import_labels(bad, rater="ann", database_url=db_url)
    assert import_labels(good, rater="ann", database_url=db_url).labels == len(rows) - 1


def test_the_rubric_is_the_suites_judge_rubric_else_overall_on_one_to_five() -> None:
    judged = rubric_for(SUITE.replace("    metrics", RUBRIC + "    metrics"), "qa")
    assert (judged.criteria, judged.scale) == (["helpful", "correct"], [1, 2, 3])
    plain = rubric_for(SUITE, "qa")
    assert (plain.criteria, plain.scale) == (["overall"], [1, 2, 3, 4, 5])


def test_a_row_scored_on_some_criteria_only_is_refused(tmp_path: Path) -> None:
    from posteval.human.labels import Key, read_labels

    key = Key(
        tmp_path / "key.json",
        "e",
        "r",
        None,
        "score",
        ["helpful", "correct"],
        [1, 2, 3],
        {"abc": {"dataset": "qa", "example": "0"}},
    )
    path = tmp_path / "partial.csv"
    path.write_text("item,prompt,output,helpful,correct\nabc,p,o,2,\n")
    with pytest.raises(InputError, match=r"partial.csv line 2: item 'abc' has no score for 'correct'"):
        read_labels(path, key)


def _score_all(db_url: str, tmp_path: Path, run_id: str, score: int, rater: str) -> None:
    written = export(run_id, tmp_path, database_url=db_url)
    filled = _fill(tmp_path / "filled.csv", [r | {"overall": str(score)} for r in _csv(written.items_csv)])
    import_labels(filled, rater=rater, database_url=db_url)


def test_human_scores_are_compared_and_gated_like_any_metric(db_url: str, tmp_path: Path) -> None:
    from posteval.inputs.suite import parse_suite
    from posteval.judging.compare import compare_runs

    gated = SUITE + "gates:\n  qa/human_score: {max_drop: 0.5, alpha: 0.05}\n"
    suite, _ = parse_suite(gated, tmp_path / "suite.yaml")  # a gate may name a human metric
    baseline = store_run(db_url, tmp_path / "data", n=12)
    candidate = store_run(db_url, tmp_path / "data", n=12)
    _score_all(db_url, tmp_path / "b", baseline.id, 5, "ann")
    _score_all(db_url, tmp_path / "c", candidate.id, 2, "ann")
    comparison = compare_runs(baseline.id, candidate.id, gates=suite.gates, database_url=db_url)
    row = next(r for r in comparison.rows if r.metric == "human_score")
    assert (row.baseline, row.candidate) == (5.0, 2.0)
    assert [r.metric for r in comparison.regressions] == ["human_score"]


def test_cli_round_trip_and_a_refused_import_in_one_line_with_exit_2(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from posteval.cli import app
    from posteval.settings import get_settings

    monkeypatch.setenv("POSTEVAL_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    try:
        run = store_run(sqlite_url, tmp_path / "data")
        runner = CliRunner()
        out = tmp_path / "out"
        exported = runner.invoke(app, ["human", "export", run.id[:12], "--out", str(out), "--sample", "4"])
        assert exported.exit_code == 0, exported.output
        rows = _csv(out / "items.csv")
        assert len(rows) == 4
        bad = _fill(out / "bad.csv", [r | {"overall": "9" if i == 2 else "2"} for i, r in enumerate(rows)])
        refused = runner.invoke(app, ["human", "import", str(bad), "--rater", "ann"])
        assert refused.exit_code == 2
        assert refused.stderr.strip() == (
            f"error: {bad} line 4: field 'overall': '9' is not on the rubric's scale (1, 2, 3, 4, 5)"
        )
        good = _fill(out / "good.csv", [r | {"overall": "2"} for r in rows])
        imported = runner.invoke(app, ["human", "import", str(good), "--rater", "ann"])
        assert imported.exit_code == 0, imported.output
        assert "qa/human_score = 2.0000" in imported.output and "n=4, 1 rater(s)" in imported.output
    finally:
        get_settings.cache_clear()


def test_single_items_carry_a_column_per_criterion_of_the_suites_judge_rubric(
    db_url: str, tmp_path: Path
) -> None:
    source = SUITE.replace("    metrics", RUBRIC + "    metrics")
    run = store_run(db_url, tmp_path / "data", source=source)
    written = export(run.id, tmp_path / "out", database_url=db_url)
    assert list(_csv(written.items_csv)[0]) == ["item", "prompt", "output", "helpful", "correct"]
    assert json.loads(written.key.read_text())["rubric"] == {
        "criteria": ["helpful", "correct"],
        "scale": [1, 2, 3],
    }
    rows = _csv(written.items_csv)
    filled = _fill(tmp_path / "out" / "f.csv", [r | {"helpful": "3", "correct": "1"} for r in rows])
    result = import_labels(filled, rater="ann", database_url=db_url).metrics["qa"]
    assert result.value == 2.0 and result.details["criteria"] == ["correct", "helpful"]
    bad = _fill(tmp_path / "out" / "b.csv", [r | {"helpful": "3", "correct": "4"} for r in rows])
    with pytest.raises(
        InputError, match=r"b.csv line 2: field 'correct': '4' is not on the rubric's scale \(1, 2, 3\)"
    ):
        import_labels(bad, rater="bob", database_url=db_url)


def test_an_import_that_fails_while_storing_leaves_no_label_behind(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import posteval.human.store as store

    run_id, rows = _exported(db_url, tmp_path)
    path = _fill(tmp_path / "out" / "filled.csv", [r | {"overall": "4"} for r in rows])

    def broken(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "replace_metric", broken)  # fails after the labels were added
    with pytest.raises(RuntimeError, match="disk full"):
        import_labels(path, rater="ann", database_url=db_url)
    assert _labels(db_url, run_id, "score") == []


def test_datasets_with_different_rubrics_are_exported_one_at_a_time(db_url: str, tmp_path: Path) -> None:
    from posteval.db.models import Dataset, Metric

    source = SUITE.replace("    metrics", RUBRIC + "    metrics")
    run = store_run(db_url, tmp_path / "data", source=source)
    # a second dataset in the run with the default rubric: the stored suite does not name it
    with session_scope(db_url) as session:
        qa = session.query(Metric).filter_by(run_id=run.id).one()
        other = Dataset(name="other", fingerprint="f" * 64, row_count=1, path=str(tmp_path / "none.jsonl"))
        session.add(other)
        session.flush()
        session.add(
            Metric(
                run_id=run.id,
                dataset_id=other.id,
                name="exact_match",
                value=0.0,
                n=1,
                higher_is_better=True,
                signature=qa.signature,
            )
        )
    with pytest.raises(InputError, match=r"no dataset 'nope' of generated outputs: qa, other"):
        export(run.id, tmp_path / "x", dataset="nope", database_url=db_url)
    written = export(run.id, tmp_path / "out", dataset="qa", database_url=db_url)
    assert {e["dataset"] for e in json.loads(written.key.read_text())["items"].values()} == {"qa"}
