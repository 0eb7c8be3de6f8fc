"""pass@k: the unbiased estimator of Chen et al. (2021) against its definition, the metric over problems,
and the suite's checks on code datasets."""

from __future__ import annotations

from fractions import Fraction
from math import comb
from pathlib import Path

import pytest

from posteval.errors import SuiteError
from posteval.evaluators import EvalInputs, resolve_metric
from posteval.evaluators.code import pass_at_k_estimate
from posteval.inputs.suite import load_suite


def direct(n: int, c: int, k: int) -> float:
    """The definition: 1 - C(n-c, k) / C(n, k), exactly in integers."""
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_the_product_form_equals_the_binomial_definition(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k_estimate(n, c, k) == pytest.approx(direct(n, c, k), abs=1e-12)


def test_large_n_stays_finite_where_the_binomials_overflow_a_float() -> None:
    assert float(comb(200, 100)) > 1e58  # the plain ratio of floats would be inf/inf past n ~ 1030
    assert pass_at_k_estimate(200, 37, 100) == pytest.approx(direct(200, 37, 100), abs=1e-12)
    assert pass_at_k_estimate(2000, 3, 10) == pytest.approx(direct(2000, 3, 10), abs=1e-12)


def test_pass_at_1_is_the_share_of_passing_samples() -> None:
    assert pass_at_k_estimate(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k_estimate(4, 0, 2) == 0.0
    assert pass_at_k_estimate(4, 3, 2) == 1.0  # fewer failures than k: every draw of k holds a pass


def test_k_above_n_is_refused() -> None:
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k_estimate(3, 1, 4)


def _runs(*passed: int, n: int = 4) -> list[list[dict[str, object]]]:
    return [
        [
            {"status": "passed" if i < c else "failed", "error": None if i < c else "AssertionError"}
            for i in range(n)
        ]
        for c in passed
    ]


def test_the_metric_averages_each_problems_estimate_and_keeps_its_outcomes() -> None:
    executions = _runs(0, 1, 4)
    inputs = EvalInputs(predictions=["", "", ""], executions=executions, n_bootstrap=200)
    result = resolve_metric({"pass_at_k": {"k": 2}}).compute(inputs)
    expected = [direct(4, 0, 2), direct(4, 1, 2), direct(4, 4, 2)]
    assert result.name == "pass@2"
    assert result.per_example == pytest.approx(expected)
    assert result.value == pytest.approx(sum(expected) / 3)
    assert result.ci_low is not None and result.ci_low <= result.value <= result.ci_high
    assert result.details == {"outcomes": {"passed": 5, "failed": 7}}
    assert result.example_details is not None
    assert [d["passed"] for d in result.example_details] == [0, 1, 4]
    assert result.example_details[1]["samples"][1]["error"] == "AssertionError"


def test_pass_rate_is_the_share_of_all_samples_that_pass() -> None:
    inputs = EvalInputs(predictions=["", ""], executions=_runs(1, 2))
    result = resolve_metric("pass_rate").compute(inputs)
    assert (result.name, result.value, result.per_example) == ("pass_rate", 3 / 8, [0.25, 0.5])


SUITE = """\
name: s
allow_incomplete: true
datasets:
  - name: problems
    path: problems.jsonl
    kind: {kind}
    prompt: "{{prompt}}"
{extra}    metrics: {metrics}
"""


def _load(tmp_path: Path, kind: str, metrics: str, extra: str = "") -> object:
    (tmp_path / "problems.jsonl").write_text('{"prompt": "def f():", "test": "", "entry_point": "f"}\n')
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(kind=kind, metrics=metrics, extra=extra))
    return load_suite(path)


def test_a_k_above_the_samples_drawn_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SuiteError) as caught:
        _load(tmp_path, "code", "[{pass_at_k: {k: 5}}]", "    sampling: {n: 3}\n")
    assert str(caught.value) == (
        f"{tmp_path / 'suite.yaml'}: datasets[0].metrics[0]: pass@5 needs at least 5 samples per problem, "
        "and dataset 'problems' draws 3 (set sampling: {n: ...})"
    )


def test_pass_at_k_on_a_generated_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="runs programs and needs a dataset with kind: code"):
        _load(tmp_path, "generate", "[pass_rate]")


def test_a_text_metric_on_a_code_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="does not apply to dataset 'problems' of kind: code"):
        _load(tmp_path, "code", "[exact_match]")


def test_sampling_outside_a_code_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"'sampling' .* applies to kind: code datasets"):
        _load(tmp_path, "generate", "[exact_match]", "    reference: prompt\n    sampling: {n: 3}\n")


def test_an_unknown_sandbox_option_names_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"unknown field 'memory' \(expected one of: backend, workers"):
        _load(tmp_path, "code", "[pass_rate]", "    sandbox: {memory: 5}\n")


def test_a_gate_may_name_a_pass_at_k(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path, "code", "[{pass_at_k: {k: 1}}, pass_rate]\ngates:\n  problems/pass@1: {max_drop: 0.05}"
    )
    assert list(loaded.suite.gates) == ["problems/pass@1"]  # type: ignore[attr-defined]
