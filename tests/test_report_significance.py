"""Is a difference real? Hand-made prediction files whose answers are known."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from mlproject.report.gate import GateConfig, evaluate
from mlproject.report.render import render
from mlproject.report.significance import compare, from_texts, mcnemar_exact

from conftest import run

N = 270


def predictions(fixed: int, broken: int, both_wrong: int = 3) -> tuple[str, str]:
    """Base and head predictions.csv of N items: head fixes `fixed` items base got wrong and
    breaks `broken` that base got right; `both_wrong` items both get wrong."""
    actual = [str(i % 10) for i in range(N)]
    base, head = list(actual), list(actual)

    def wrong(i: int) -> str:
        return str((int(actual[i]) + 1) % 10)

    for i in range(fixed):
        base[i] = wrong(i)
    for i in range(fixed, fixed + broken):
        head[i] = wrong(i)
    for i in range(N - both_wrong, N):
        base[i] = head[i] = wrong(i)

    def csv(pred: list[str]) -> str:
        return "actual,predicted\n" + "".join(
            f"{a},{p}\n" for a, p in zip(actual, pred, strict=True)
        )

    return csv(base), csv(head)


def test_exact_mcnemar_matches_the_binomial_by_hand():
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    assert mcnemar_exact(0, 10) == mcnemar_exact(10, 0)
    assert mcnemar_exact(2, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # 8 vs 1: 2 * (1 + 9) / 512
    assert mcnemar_exact(8, 1) == pytest.approx(20 / 512)


def test_ten_fixed_none_broken_of_270_is_significant():
    sig = from_texts(*predictions(fixed=10, broken=0))
    acc = sig["accuracy"]
    assert (acc["fixed"], acc["broken"]) == (10, 0)
    assert acc["p_value"] == pytest.approx(0.001953, abs=1e-6)
    assert acc["delta"] == pytest.approx(10 / N, abs=1e-6)
    assert acc["ci95"][0] > 0  # the whole interval is an improvement
    assert sig["f1_macro"]["significant"] and sig["f1_macro"]["ci95"][0] > 0
    assert sig["verdict"] == "significant"


def test_two_fixed_three_broken_is_within_noise():
    sig = from_texts(*predictions(fixed=2, broken=3))
    acc = sig["accuracy"]
    assert (acc["fixed"], acc["broken"]) == (2, 3)
    assert acc["p_value"] == 1.0 and not acc["significant"]
    assert acc["ci95"][0] < acc["delta"] < acc["ci95"][1] and acc["ci95"][0] < 0 < acc["ci95"][1]
    assert not sig["f1_macro"]["significant"]
    assert sig["verdict"] == "within noise"


def test_identical_predictions_and_the_bootstrap_is_seeded():
    base, head = predictions(0, 0)
    sig = from_texts(base, head)
    assert sig["accuracy"]["ci95"] == [0.0, 0.0] and sig["verdict"] == "within noise"
    assert from_texts(*predictions(4, 1)) == from_texts(*predictions(4, 1))


def test_predictions_of_other_test_items_are_not_compared():
    base, head = predictions(1, 1)
    assert "not the same test items" in from_texts(base, head + "3,3\n")["error"]
    shifted = head.replace("actual,predicted\n0,", "actual,predicted\n1,", 1)
    assert "test sets differ" in from_texts(base, shifted)["error"]
    assert "no reports/eval/predictions.csv at the base" in from_texts(None, head)["error"]
    with pytest.raises(ValueError, match="not the same test items"):
        compare([], [], [])


def test_the_report_shows_the_figures_and_ends_in_the_verdict():
    sig = from_texts(*predictions(10, 0))
    report = {
        "base": {"rev": "a" * 40, "short": "aaaaaaa", "label": "main"},
        "head": {"rev": "b" * 40, "short": "bbbbbbb", "dirty": False},
        "gate": {"passed": True, "checks": []},
        "significance": sig,
    }
    md = render(report, images="none")
    section = md.split("#### Is the difference real?")[1].strip()
    assert "head **fixes 10** and **breaks 0**" in section
    assert "`accuracy`" in section and "0.00195" in section
    assert section.splitlines()[-1] == "Verdict at α = 0.05: **significant**"
    noise = render({**report, "significance": from_texts(*predictions(2, 3))}, images="none")
    assert noise.rstrip().endswith("**within noise**")


def test_gate_counts_a_regression_only_when_significant_if_asked():
    head, base = {"accuracy": 0.97}, {"accuracy": 0.985}  # worse by 0.015 > 0.01
    noise = from_texts(*predictions(2, 6))
    real = from_texts(*predictions(0, 12))
    plain = GateConfig(max_regression={"accuracy": 0.01})
    assert not evaluate(plain, head, base, noise)["passed"]  # default: the rule as before
    needs = GateConfig(max_regression={"accuracy": 0.01}, regression_needs_significance=True)
    result = evaluate(needs, head, base, noise)
    assert result["passed"] and "within noise" in result["checks"][0]["reason"]
    result = evaluate(needs, head, base, real)
    assert not result["passed"] and "significant" in result["checks"][0]["reason"]
    assert not evaluate(needs, head, base, {"error": "no base predictions"})["passed"]


def test_the_option_is_read_from_params_and_checked():
    cfg = GateConfig.from_params({"gate": {"regression_needs_significance": True}})
    assert cfg.regression_needs_significance
    with pytest.raises(ValueError, match="gate.regression_needs_significance"):
        GateConfig.from_params({"gate": {"regression_needs_significance": "yes"}})


@pytest.mark.slow
def test_report_json_carries_significance_against_the_base_predictions(pipeline_repo, tmp_path):
    repo = Path(shutil.copytree(pipeline_repo, tmp_path / "repo", symlinks=True))
    run("git add -A && git commit -q --allow-empty -m outputs", repo)
    # Head breaks the first three test items the base got right.
    path = repo / "reports/eval/predictions.csv"
    lines = path.read_text().splitlines()
    right = [i for i in range(1, len(lines)) if len(set(lines[i].split(","))) == 1][:3]
    for i in right:
        actual = lines[i].split(",")[0]
        lines[i] = f"{actual},{(int(actual) + 1) % 10}"
    path.write_text("\n".join(lines) + "\n")
    # Head's outputs are hand-made here: report on them as they are (no refresh from DVC).
    build = [sys.executable, "-m", "mlproject.report", "build", "--base", "HEAD", "--no-plots"]
    build += ["--head-outputs", "as-is"]
    run([*build, "--no-latency"], repo)
    sig = json.loads((repo / "reports/pr/report.json").read_text())["significance"]
    assert sig["accuracy"]["broken"] == 3 and sig["accuracy"]["fixed"] == 0
    assert sig["verdict"] == "within noise"
    assert "Verdict at α = 0.05: **within noise**" in (repo / "reports/pr/report.md").read_text()
