"""Agreement statistics: Krippendorff's alpha against the published worked example, Cohen's kappa against
scikit-learn, and judge-human agreement in the run's report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from posteval.human.agreement import cohen_kappa, krippendorff_alpha, largest_disagreements, nearest_point

NAN = math.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers, twelve
# units, missing values. The paper's results: nominal .743, ordinal .815, interval .849.
PAPER = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_krippendorff_alpha_reproduces_the_papers_worked_example(level: str, published: float) -> None:
    assert round(krippendorff_alpha(PAPER, level=level), 3) == published  # type: ignore[arg-type]


def test_alpha_is_one_for_raters_who_always_agree_and_undefined_without_pairs() -> None:
    assert krippendorff_alpha([[1, 2, 3, 2], [1, 2, 3, 2]]) == 1.0
    assert math.isnan(krippendorff_alpha([[1, NAN], [NAN, 2]]))  # no unit labelled twice


@pytest.mark.parametrize("weights", ["quadratic", None])
def test_kappa_is_scikit_learns_cohen_kappa_score(weights: str | None) -> None:
    rng = np.random.default_rng(0)
    human = rng.integers(1, 6, size=80)
    judge = np.clip(human + rng.integers(-1, 2, size=80), 1, 5)
    kappa = cohen_kappa(
        [float(v) for v in judge],
        [float(v) for v in human],
        scale=[1, 2, 3, 4, 5],
        weights=weights,
        n_resamples=200,
    )  # type: ignore[arg-type]
    assert kappa.value == pytest.approx(cohen_kappa_score(judge, human, weights=weights))
    assert kappa.ci_low is not None and kappa.ci_high is not None
    assert kappa.ci_low < kappa.value < kappa.ci_high and kappa.n == 80 and kappa.weights == weights


def test_kappa_rounds_mean_ratings_to_the_scale_and_its_ci_is_seeded() -> None:
    judge, human = [1.4, 2.5, 3.0, 4.6, 5.0, 2.0], [1.0, 3.0, 3.5, 5.0, 4.5, 2.0]
    assert nearest_point(judge, [1, 2, 3, 4, 5]) == [1.0, 3.0, 3.0, 5.0, 5.0, 2.0]
    kappa = cohen_kappa(judge, human, scale=[1, 2, 3, 4, 5], n_resamples=100, seed=4)
    assert kappa.value == pytest.approx(
        cohen_kappa_score([1, 3, 3, 5, 5, 2], [1, 3, 4, 5, 5, 2], labels=[1, 2, 3, 4, 5], weights="quadratic")
    )
    again = cohen_kappa(judge, human, scale=[1, 2, 3, 4, 5], n_resamples=100, seed=4)
    assert (kappa.ci_low, kappa.ci_high) == (again.ci_low, again.ci_high)


def test_largest_disagreements_come_first_and_agreements_are_left_out() -> None:
    found = largest_disagreements(["a", "b", "c", "d"], [1, 5, 3, 2], [1, 2, 4, 4], top=3)
    assert found == [("b", 5, 2), ("d", 2, 4), ("c", 3, 4)]


def test_the_report_shows_raters_and_judge_human_kappa_with_the_worst_items(
    db_url: str, tmp_path: Path
) -> None:
    import csv
    import json

    from posteval.human.blind import export
    from posteval.human.store import import_labels
    from posteval.views.report import render_report
    from tests.human_fixtures import store_judge_scores, store_run

    run = store_run(db_url, tmp_path / "data", n=8)
    written = export(run.id, tmp_path / "out", database_url=db_url)
    key = json.loads(written.key.read_text())
    with written.items_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    human = {key["items"][r["item"]]["example"]: (i % 5) + 1 for i, r in enumerate(rows)}
    with (tmp_path / "out" / "ann.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r | {"overall": str(human[key["items"][r["item"]]["example"]])} for r in rows)
    import_labels(tmp_path / "out" / "ann.csv", rater="ann", database_url=db_url)
    judge = {k: float(v) for k, v in human.items()}
    worst = sorted(human)[0]
    judge[worst] = 6.0 - human[worst]  # the one item the judge gets badly wrong (unless it was a 3)
    if human[worst] == 3:
        judge[worst] = 5.0
    store_judge_scores(db_url, run.id, "judge_score", judge)
    keys = sorted(human)
    expected = cohen_kappa_score(
        [judge[k] for k in keys], [human[k] for k in keys], labels=[1, 2, 3, 4, 5], weights="quadratic"
    )
    page = render_report(run.id, database_url=db_url)
    section = page[page.index("Human evaluation</h2>") :]
    assert f"Cohen&#x27;s kappa (quadratic-weighted) {expected:.4f}" in section
    assert f"on {len(keys)} items" in section
    assert f"<td>{worst}</td>" in section and run.outputs[worst] in section
    assert "raters&#x27; agreement: needs two raters" in section


def test_the_report_shows_unweighted_kappa_of_judge_and_human_preferences(
    db_url: str, tmp_path: Path
) -> None:
    import csv
    import json

    from posteval.human.blind import export
    from posteval.human.store import import_labels
    from posteval.views.report import render_report
    from tests.human_fixtures import store_judge_scores, store_run

    base = store_run(db_url, tmp_path / "data", n=9)
    run = store_run(db_url, tmp_path / "data", n=9)
    written = export(run.id, tmp_path / "out", base_run_id=base.id, database_url=db_url)
    key = json.loads(written.key.read_text())
    with written.items_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    outcome = {key["items"][r["item"]]["example"]: [1.0, 0.5, 0.0][i % 3] for i, r in enumerate(rows)}
    choice = {1.0: {"run": "A", "base": "B"}, 0.0: {"run": "B", "base": "A"}}
    with (tmp_path / "out" / "p.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            entry = key["items"][r["item"]]
            wanted = outcome[entry["example"]]
            writer.writerow(r | {"preference": "tie" if wanted == 0.5 else choice[wanted][entry["a"]]})
    import_labels(tmp_path / "out" / "p.csv", rater="ann", database_url=db_url)
    keys = sorted(outcome)
    judge = {
        k: (1.0 if i < 4 else outcome[k]) for i, k in enumerate(keys)
    }  # the judge says win on the first 4
    store_judge_scores(db_url, run.id, "win_rate", judge)
    expected = cohen_kappa_score(
        [str(judge[k]) for k in keys], [str(outcome[k]) for k in keys], labels=["0.0", "0.5", "1.0"]
    )
    section = render_report(run.id, database_url=db_url).split("Human evaluation</h2>")[1]
    assert (
        f"judge (win_rate) against humans (human_win_rate): Cohen&#x27;s kappa (unweighted) {expected:.4f}"
        in section
    )
