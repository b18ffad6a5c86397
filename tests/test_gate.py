"""The quality gate: floors, ceilings, max regression, directions, config errors."""

from __future__ import annotations

import pytest
import yaml

from mlproject.report.gate import GateConfig, GateConfigError, evaluate

from conftest import ROOT


def failed(result: dict) -> list[tuple[str, str]]:
    return [(c["metric"], c["rule"]) for c in result["checks"] if not c["ok"]]


def test_the_committed_gate_section_loads():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    gate = GateConfig.from_params(params)
    assert gate.metrics_file == "reports/eval/metrics.json"
    assert {"accuracy", "f1_macro"} <= set(gate.min)
    assert gate.direction("loss") == "lower"
    assert gate.direction("n_test") == "neutral"
    assert gate.direction("f1_macro") == "higher"


def test_floor_and_ceiling():
    gate = GateConfig(min={"accuracy": 0.95}, max={"loss": 0.5})
    assert evaluate(gate, {"accuracy": 0.96, "loss": 0.4}, None)["passed"]
    result = evaluate(gate, {"accuracy": 0.94, "loss": 0.6}, None)
    assert not result["passed"]
    assert failed(result) == [("accuracy", "min"), ("loss", "max")]


@pytest.mark.parametrize(
    ("value", "passed"),
    [
        (0.95, True),  # exactly on the floor: passes
        (0.95 - 1e-9, False),  # the smallest step below that is not float noise: fails
        (0.9499, False),
    ],
)
def test_a_value_exactly_on_its_floor_passes_and_just_below_fails(value, passed):
    result = evaluate(GateConfig(min={"accuracy": 0.95}), {"accuracy": value}, None)
    assert result["passed"] is passed
    assert result["checks"][0]["reason"] == (f"accuracy {value:.4g} {'>=' if passed else '<'} 0.95")


@pytest.mark.parametrize(("value", "passed"), [(0.5, True), (0.5 + 1e-9, False)])
def test_a_value_exactly_on_its_ceiling_passes_and_just_above_fails(value, passed):
    assert evaluate(GateConfig(max={"loss": 0.5}), {"loss": value}, None)["passed"] is passed


@pytest.mark.parametrize(("value", "passed"), [(0.97, True), (0.97 - 1e-9, False)])
def test_a_regression_exactly_at_the_allowance_passes_and_just_over_fails(value, passed):
    # 0.98 - 0.97 is 0.010000000000000009 in floats: the gate's EPS absorbs that noise.
    gate = GateConfig(max_regression={"accuracy": 0.01})
    assert evaluate(gate, {"accuracy": value}, {"accuracy": 0.98})["passed"] is passed


def test_regression_within_and_over_the_allowance():
    gate = GateConfig(max_regression={"accuracy": 0.01})
    assert evaluate(gate, {"accuracy": 0.975}, {"accuracy": 0.98})["passed"]
    result = evaluate(gate, {"accuracy": 0.96}, {"accuracy": 0.98})
    assert failed(result) == [("accuracy", "max_regression")]
    assert "worse by 0.02 (over 0.01)" in result["checks"][0]["reason"]


def test_regression_of_a_lower_is_better_metric_is_an_increase():
    gate = GateConfig(max_regression={"loss": 0.05}, lower_is_better=["loss"])
    assert evaluate(gate, {"loss": 0.10}, {"loss": 0.30})["passed"]  # a big drop is good
    assert not evaluate(gate, {"loss": 0.40}, {"loss": 0.30})["passed"]


def test_missing_base_skips_regression_but_not_floors():
    gate = GateConfig(min={"accuracy": 0.9}, max_regression={"accuracy": 0.01})
    result = evaluate(gate, {"accuracy": 0.95}, None)
    assert result["passed"]
    assert "no base value" in result["checks"][1]["reason"]
    assert not evaluate(gate, {"accuracy": 0.85}, None)["passed"]


@pytest.mark.parametrize("head", [{}, {"accuracy": float("nan")}, {"accuracy": "high"}])
def test_missing_nan_or_non_numeric_head_fails(head):
    gate = GateConfig(min={"accuracy": 0.5}, max_regression={"accuracy": 0.5})
    result = evaluate(gate, head, {"accuracy": 0.9})
    assert not result["passed"]
    assert all(not c["ok"] for c in result["checks"])


def test_nan_base_is_treated_as_missing():
    gate = GateConfig(max_regression={"accuracy": 0.01})
    assert evaluate(gate, {"accuracy": 0.5}, {"accuracy": float("nan")})["passed"]


def test_no_checks_passes():
    assert evaluate(GateConfig(), {"accuracy": 0.1}, None) == {"passed": True, "checks": []}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"min": {"accuracy": "high"}}, "'gate.min.accuracy' must be a number"),
        ({"min": [0.9]}, "'gate.min' must map metric names to numbers"),
        ({"max_regression": {"accuracy": -0.1}}, "'gate.max_regression.accuracy' must be >= 0"),
        ({"floor": {"accuracy": 0.9}}, "unknown key 'gate.floor'"),
        ({"lower_is_better": "loss"}, "'gate.lower_is_better' must be a list"),
        ({"metrics_file": 3}, "'gate.metrics_file' must be a path string"),
    ],
)
def test_bad_config_names_the_key(section, message):
    with pytest.raises(GateConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GateConfig.from_params({"gate": section})
