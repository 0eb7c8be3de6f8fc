"""One number-or-dash formatter and one forgetting table, shared by the terminal, the HTML report, the
nightly summary and the gate's messages (they had drifted: the terminal crashed on a missing base value)."""

from __future__ import annotations

import pytest
from rich.console import Console

from posteval.numbers import ci, num
from posteval.views import render
from posteval.views.report import _forgetting
from posteval.views.run_details import forgetting_table


@pytest.mark.parametrize(
    ("value", "spec", "shown"),
    [
        (None, ".4f", "-"),
        (float("nan"), ".4f", "-"),
        (0.123456, ".4f", "0.1235"),
        (0.0312, "+.1%", "+3.1%"),
        (5.0, "d", "5"),
        (7, "d", "7"),
    ],
)
def test_a_number_in_its_spec_or_a_dash(value: float | None, spec: str, shown: str) -> None:
    assert num(value, spec) == shown


def test_the_gate_says_n_a_through_the_same_formatter() -> None:
    assert num(float("nan"), ".2g", missing="n/a") == "n/a"


def test_an_interval_needs_both_ends() -> None:
    assert ci(0.1, 0.25) == "[0.1000, 0.2500]"
    assert ci(-0.01, 0.02, "+.4f") == "[-0.0100, +0.0200]"
    assert ci(None, 0.2) == "-"
    assert ci(0.1, float("nan")) == "-"


CHANGE = {
    "dataset": "general-text",
    "metric": "perplexity",
    "base": None,  # undefined on the base (no scored tokens)
    "tuned": 12.5,
    "relative_worsening": 0.25,
    "p_value": None,
    "test": "paired_bootstrap",
    "forgotten_share": None,
    "forgets": False,
}


def test_the_forgetting_table_is_text_with_dashes_for_missing_values() -> None:
    (headers, rows), forgets = forgetting_table([CHANGE, {**CHANGE, "base": 10.0, "forgets": True}])
    assert headers == [
        "dataset", "metric", "base", "fine-tune", "worse by", "p", "test", "forgotten", "examples lost",
    ]  # fmt: skip
    assert rows == [
        ["general-text", "perplexity", "-", "12.5", "+25.0%", "-", "paired_bootstrap", "no", "-"],
        ["general-text", "perplexity", "10", "12.5", "+25.0%", "-", "paired_bootstrap", "yes", "-"],
    ]
    assert forgets == [False, True]


def test_terminal_and_report_show_the_same_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    report = {"verdict": "none", "reason": "nothing forgotten", "details": {"changes": [CHANGE]}}
    terminal = Console(width=200, record=True, color_system=None)
    monkeypatch.setattr(render, "console", terminal)
    render.print_health({"forgetting": report})
    shown = terminal.export_text()
    html = "".join(str(part) for part in _forgetting(report))
    for cell in ("general-text", "perplexity", "12.5", "+25.0%", "paired_bootstrap"):
        assert cell in shown and cell in html
    assert "│ -" in shown or "- │" in shown
