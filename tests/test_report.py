"""`posteval report`: one self-contained, escaped HTML page per run, which Chromium shows without errors."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from posteval.db import queries
from posteval.db.engine import session_scope
from posteval.db.models import Baseline, Prediction, RunDetail
from posteval.flows.post_training import evaluate_checkpoint
from posteval.judging.baseline import set_baseline
from posteval.judging.compare import compare_runs
from posteval.views.report import FLIPS, write_report
from tests.helpers import heldout_rows, write_jsonl

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
N_ROWS = 24
SCRIPT, IMAGE = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"
SUITE = """\
name: report
allow_incomplete: true  # a focused test suite, not a full evaluation
base_model: {base}
generation: {{max_new_tokens: 6, stop: ["\\n"], batch_size: 8}}
datasets:
  - name: contract-type
    path: heldout.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    labels: [lease, nda, employment]
    metrics: [accuracy, confusion_matrix, per_class]
  - name: hostile
    path: hostile.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: expected
    key: id
    metrics: [exact_match]
  - name: general-text
    path: {general}
    kind: perplexity
    key: id
    limit: 6
    general: true
    metrics: [perplexity]
training_health: {{max_gap: 0.3}}
"""
OTHER_SUITE = """\
name: report-other
allow_incomplete: true
generation: {max_new_tokens: 6, stop: ["\\n"], batch_size: 8}
datasets:
  - {name: hostile, path: hostile.jsonl, prompt: "{text}", reference: expected, metrics: [exact_match]}
"""


@dataclass(frozen=True)
class Evaluated:
    """Two runs of one model and suite (the second's baseline is the first) and the second's report."""

    url: str
    baseline: str
    candidate: str
    folder: Path
    page: str


class Page(HTMLParser):
    """Every start tag with its attributes, and every table's rows of cell texts."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self.table_ids: list[str | None] = []
        self._cell: list[str] | None = None
        self.feed(document)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
            self.table_ids.append(dict(attrs).get("id"))
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def section(document: str, name: str) -> str:
    """The HTML of one report section."""
    found = re.search(f'<section id="{name}">(.*?)</section>', document, re.S)
    assert found, f"no section {name!r}"
    return found.group(1)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def evaluated(
    request: pytest.FixtureRequest,
    prefect_harness: None,
    base_checkpoint: Path,
    finetuned_checkpoint: Path,
    overfit_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Evaluated:
    """The sensible fine-tune, then the overfit one (a later step, so the first is its baseline)."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    folder = tmp_path_factory.mktemp("report")
    write_jsonl(folder / "heldout.jsonl", heldout_rows(N_ROWS))
    write_jsonl(folder / "hostile.jsonl", [{"id": "x1", "text": SCRIPT, "expected": IMAGE}])
    general = Path(__file__).resolve().parents[1] / "examples" / "contracts" / "general.jsonl"
    (folder / "suite.yaml").write_text(SUITE.format(base=base_checkpoint, general=general))
    baseline, candidate = (
        evaluate_checkpoint(
            checkpoint=str(c), suite=str(folder / "suite.yaml"), model_name="rep", database_url=url
        )
        for c in (finetuned_checkpoint, overfit_checkpoint)
    )
    fingerprint = queries.run_summary(candidate, database_url=url)["checkpoint_fingerprint"]
    with session_scope(url) as session:  # a model output that is itself hostile markup
        session.execute(
            update(Prediction)
            .where(Prediction.checkpoint_fingerprint == fingerprint, Prediction.example_key == "x1")
            .values(output=SCRIPT + IMAGE)
        )
    report = write_report(candidate, folder / "report.html", database_url=url)
    return Evaluated(url, baseline, candidate, folder, report.read_text(encoding="utf-8"))


def test_metric_table_shows_every_metric_with_its_ci_and_n(evaluated: Evaluated) -> None:
    page = Page(section(evaluated.page, "metrics"))
    metrics = queries.run_metrics(evaluated.candidate, database_url=evaluated.url)
    better = {True: "higher", False: "lower"}
    expected = [
        [
            r.dataset,
            r.name,
            f"{r.value:.4f}",
            f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
            str(r.n),
            better[r.higher_is_better],
        ]
        for r in metrics.itertuples()
    ]
    assert page.table_ids == ["metric-table"]
    assert page.tables[0] == [["dataset", "metric", "value", "95% CI", "n", "better"], *expected]
    assert ["contract-type", "accuracy"] in [row[:2] for row in expected]


def _stored_report(evaluated: Evaluated, name: str) -> dict:
    with session_scope(evaluated.url) as session:
        return session.scalars(
            select(RunDetail.details).where(RunDetail.run_id == evaluated.candidate, RunDetail.name == name)
        ).one()


def test_confusion_matrix_is_the_stored_one(evaluated: Evaluated) -> None:
    details = _stored_report(evaluated, "confusion_matrix")
    rows = Page(section(evaluated.page, "reports")).tables[0]
    assert rows[0] == ["true \\ predicted", *details["labels"]]
    assert [row[0] for row in rows[1:]] == details["labels"]
    assert [[int(n) for n in row[1:]] for row in rows[1:]] == details["matrix"]


def test_per_class_table_is_the_stored_one(evaluated: Evaluated) -> None:
    table = _stored_report(evaluated, "per_class")["per_class"]
    rows = Page(section(evaluated.page, "reports")).tables[1]
    assert rows[0] == ["label", "precision", "recall", "f1", "support"]
    assert rows[1:] == [
        [label, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", str(v["support"])]
        for label, v in table.items()
    ]


def test_reports_are_details_not_metrics(evaluated: Evaluated) -> None:
    names = set(queries.run_metrics(evaluated.candidate, database_url=evaluated.url)["name"])
    assert names.isdisjoint({"confusion_matrix", "per_class"}) and "accuracy" in names


def test_health_shows_the_verdicts_and_the_loss_curve_inline(evaluated: Evaluated) -> None:
    health = queries.run_health(evaluated.candidate, database_url=evaluated.url)
    part = section(evaluated.page, "health")
    assert html.escape(str(health["overfitting"]["reason"])) in part
    assert html.escape(str(health["forgetting"]["reason"])) in part
    images = [attrs["src"] for tag, attrs in Page(part).tags if tag == "img"]
    assert len(images) == 1 and images[0] and images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(images[0].split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_comparison_and_flips_show_both_runs_outputs(evaluated: Evaluated) -> None:
    comparison = compare_runs(evaluated.baseline, evaluated.candidate, database_url=evaluated.url)
    accuracy = next(r for r in comparison.rows if (r.dataset, r.metric) == ("contract-type", "accuracy"))
    table = Page(section(evaluated.page, "comparison")).tables[0]
    values = [f"{accuracy.baseline:.4f}", f"{accuracy.candidate:.4f}", f"{accuracy.delta:+.4f}"]
    assert ["contract-type", "accuracy", *values] in [r[:5] for r in table]
    assert accuracy.worsened, "the overfit fine-tune gets clauses wrong that the sensible one got right"
    flipped = {r[0]: r for t in Page(section(evaluated.page, "flips")).tables for r in t[1:]}
    labels = {row["id"]: row["label"] for row in heldout_rows(N_ROWS)}
    for key in accuracy.worsened[:FLIPS] + accuracy.improved[:FLIPS]:
        _, _, reference, before, after = flipped[key]
        assert reference == labels[key]
        assert (before == labels[key], after == labels[key]) == (
            key in accuracy.worsened,
            key in accuracy.improved,
        )


def test_model_and_data_text_is_escaped_not_live(evaluated: Evaluated) -> None:
    page = Page(evaluated.page)
    worst = section(evaluated.page, "worst")
    assert html.escape(SCRIPT + IMAGE) in worst  # the model's output
    assert html.escape(IMAGE) in worst  # the reference
    assert f"Clause: {html.escape(SCRIPT)}" in worst  # the input
    assert not [tag for tag, _ in page.tags if tag in ("script", "iframe", "object", "embed")]
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    assert all(
        (attrs.get("src") or "").startswith("data:image/png") for tag, attrs in page.tags if tag == "img"
    )


def test_missing_dataset_file_shows_outputs_without_references(evaluated: Evaluated, tmp_path: Path) -> None:
    hostile = evaluated.folder / "hostile.jsonl"
    moved = hostile.rename(tmp_path / "hostile.jsonl")
    try:
        document = write_report(
            evaluated.candidate, tmp_path / "r.html", database_url=evaluated.url
        ).read_text()
    finally:
        moved.rename(hostile)
    worst = section(document, "worst")
    assert (
        html.escape(f"inputs and references not shown: dataset 'hostile': file not found: {hostile}") in worst
    )
    rows = [row for table in Page(worst).tables for row in table if row[0] == "x1"]
    assert rows == [["x1", "0", "-", "-", SCRIPT + IMAGE]]  # key, score, input, reference, output


def test_a_refused_comparison_shows_why(
    evaluated: Evaluated, finetuned_checkpoint: Path, tmp_path: Path
) -> None:
    suite = evaluated.folder / "other.yaml"
    suite.write_text(OTHER_SUITE)
    other = evaluate_checkpoint(
        checkpoint=str(finetuned_checkpoint), suite=str(suite), model_name="rep", database_url=evaluated.url
    )
    set_baseline("rep", "report", run_id=other, database_url=evaluated.url)
    try:
        document = write_report(
            evaluated.candidate, tmp_path / "r.html", database_url=evaluated.url
        ).read_text()
    finally:
        with session_scope(evaluated.url) as session:
            session.execute(delete(Baseline).filter_by(model_name="rep", suite_name="report"))
    reason = (
        f"runs {other[:12]} and {evaluated.candidate[:12]} are of different suites ('report-other' and "
        "'report'); compare runs of one suite"
    )
    assert html.escape(f"baseline {other}: comparison refused: {reason}") in section(document, "comparison")
    assert "no comparison with a baseline, so no flipped examples" in section(document, "flips")


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",  # console messages come out as lines with ":CONSOLE"
    "--v=0",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; missing, its tests fail under CI=true and skip elsewhere."""
    found = shutil.which("chromium")
    if found is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def open_in_chromium(chromium: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM headless Chromium built from ``page``, and every console message it logged."""
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_chromium_shows_the_metric_table_without_console_messages(
    evaluated: Evaluated, chromium: str, tmp_path: Path
) -> None:
    dom, console = open_in_chromium(chromium, evaluated.folder / "report.html", tmp_path / "profile")
    assert console == []  # no script runs, so any message is an error: a blocked request, a CSP violation
    page = Page(dom)
    metrics = queries.run_metrics(evaluated.candidate, database_url=evaluated.url)
    table = page.tables[page.table_ids.index("metric-table")]
    assert table[0] == ["dataset", "metric", "value", "95% CI", "n", "better"]
    assert len(table) == 1 + len(metrics)
    assert not [tag for tag, _ in page.tags if tag == "script"]


def test_console_check_catches_a_page_error(chromium: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text('<!doctype html><title>broken</title><script>console.error("boom")</script>')
    _, console = open_in_chromium(chromium, broken, tmp_path / "profile")
    assert any('"boom"' in line for line in console)
