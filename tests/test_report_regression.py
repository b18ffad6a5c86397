"""The PR report of a regression model: significance (Wilcoxon + paired bootstrap), gate
directions and per-task rules, plots, on hand-made prediction files whose answers are known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlproject.report.diff import metric_tables, settle_marks
from mlproject.report.gate import GateConfig, GateConfigError, evaluate
from mlproject.report.plots import render_plots
from mlproject.report.render import gate_section, render, verdict_line
from mlproject.report.significance import from_texts

from conftest import ROOT, run

N = 200
ACTUAL = [100.0 + 0.5 * i for i in range(N)]
BASE_ERRORS = np.random.default_rng(7).normal(0.0, 10.0, N)
METRICS_FILE = "reports/eval/metrics.json"


def csv_of(errors) -> str:
    """A predictions.csv whose predictions miss ACTUAL by `errors`."""
    return "actual,predicted\n" + "".join(
        f"{a!r},{float(a + e)!r}\n" for a, e in zip(ACTUAL, errors, strict=True)
    )


BASE = csv_of(BASE_ERRORS)


def sig_of(head_errors) -> dict:
    return from_texts(BASE, csv_of(head_errors), task="regression", base_task="regression")


def rmse(errors) -> float:
    return float(np.sqrt(np.mean(np.square(errors))))


# ------------------------------------------------------------------------------ significance


def test_an_identical_head_is_within_noise():
    sig = sig_of(BASE_ERRORS)
    assert sig["task"] == "regression" and sig["n"] == N
    for metric in ("rmse", "mae"):
        figures = sig[metric]
        assert (figures["improved"], figures["worsened"]) == (0, 0)
        assert figures["p_value"] == 1.0 and figures["ci95"] == [0.0, 0.0]
        assert figures["delta"] == 0.0 and not figures["significant"]
    assert sig["verdict"] == "within noise"


def test_a_head_with_errors_doubled_is_significant_and_worse():
    sig = sig_of(2 * BASE_ERRORS)
    rmse_figures, mae_figures = sig["rmse"], sig["mae"]
    assert (rmse_figures["improved"], rmse_figures["worsened"]) == (0, N)
    # Doubling every error doubles rmse and mae: the delta is the base's own value.
    assert rmse_figures["delta"] == pytest.approx(rmse(BASE_ERRORS), abs=1e-5)
    assert mae_figures["delta"] == pytest.approx(np.mean(np.abs(BASE_ERRORS)), abs=1e-5)
    for figures in (rmse_figures, mae_figures):
        assert figures["significant"] and figures["p_value"] < 1e-10
        assert 0 < figures["ci95"][0] < figures["delta"] < figures["ci95"][1]
        assert figures["test"].startswith("Wilcoxon signed-rank")
    assert "squared error" in rmse_figures["test"] and "absolute error" in mae_figures["test"]
    assert sig["verdict"] == "significant"


def test_a_head_with_errors_halved_is_significant_and_better():
    sig = sig_of(BASE_ERRORS / 2)
    assert (sig["mae"]["improved"], sig["mae"]["worsened"]) == (N, 0)
    assert sig["rmse"]["delta"] < 0 and sig["rmse"]["ci95"][1] < 0
    assert sig["verdict"] == "significant"


def test_a_head_that_wins_and_loses_alike_is_within_noise():
    # Every other item's error 5% smaller, the others' 5% larger: no evidence either way.
    sig = sig_of(BASE_ERRORS * np.where(np.arange(N) % 2 == 0, 0.95, 1.05))
    assert sig["mae"]["improved"] == sig["mae"]["worsened"] == N // 2
    assert not sig["mae"]["significant"] and not sig["rmse"]["significant"]
    assert sig["mae"]["ci95"][0] < 0 < sig["mae"]["ci95"][1]
    assert sig["verdict"] == "within noise"


def test_the_bootstrap_is_seeded_and_the_test_sets_must_match():
    assert sig_of(BASE_ERRORS * 1.1) == sig_of(BASE_ERRORS * 1.1)
    other = BASE.replace("actual,predicted\n100.0,", "actual,predicted\n99.0,", 1)
    assert "test sets differ" in from_texts(BASE, other, task="regression")["error"]
    assert "not the same test items" in from_texts(BASE, BASE + "1,2\n", task="regression")["error"]
    lines = BASE.splitlines()
    lines[1] = "100.0,oops"
    bad = from_texts(BASE, "\n".join(lines) + "\n", task="regression")
    assert "head predictions.csv: row 2: 'predicted'" in bad["error"]


def test_a_change_of_task_is_not_compared_item_by_item():
    classification = "actual,predicted\na,a\nb,a\n"
    sig = from_texts(classification, BASE, task="regression", base_task="classification")
    assert sig == {
        "error": "base is a classification model and head a regression model: "
        "their predictions are not comparable."
    }


# ----------------------------------------------------------------------- directions and gate


def committed_gate() -> GateConfig:
    return GateConfig.from_params(yaml.safe_load((ROOT / "params.yaml").read_text()))


HEAD = {"rmse": 9.5, "mae": 7.5, "r2": 0.6, "loss": 90.0, "n_test": N}
BASE_METRICS = {"rmse": 10.0, "mae": 8.0, "r2": 0.55, "loss": 100.0, "n_test": N}


def test_rmse_and_mae_are_lower_is_better_and_r2_higher_in_the_committed_config():
    gate = committed_gate()
    assert [gate.direction(m) for m in ("rmse", "mae", "r2", "loss")] == [
        "lower",
        "lower",
        "higher",
        "lower",
    ]
    assert GateConfig().direction("rmse") == "lower"  # also without a `gate:` section
    diff = {METRICS_FILE: {k: {"old": BASE_METRICS[k], "new": HEAD[k]} for k in HEAD}}
    (table,) = metric_tables(diff, gate, cwd="/nonexistent")
    marks = {r["name"]: r["mark"] for r in table["rows"]}
    assert marks == {"rmse": "better", "mae": "better", "r2": "better", "loss": "better"} | {
        "n_test": "same"
    }
    worse = {METRICS_FILE: {k: {"old": HEAD[k], "new": BASE_METRICS[k]} for k in HEAD}}
    (table,) = metric_tables(worse, gate, cwd="/nonexistent")
    md = render(
        {
            "base": {"rev": "a" * 40, "short": "aaaaaaa", "label": "main"},
            "head": {"rev": "b" * 40, "short": "bbbbbbb"},
            "metrics": [table],
        },
        images="none",
    )
    assert "| `rmse` | 9.5 | 10 | +0.5000 | 🔴 worse (lower is better) |" in md
    assert "| `r2` | 0.6 | 0.55 | -0.0500 | 🔴 worse |" in md


def test_the_committed_gate_skips_classification_rules_for_a_regression_model_with_a_note():
    result = evaluate(committed_gate(), HEAD, BASE_METRICS, task="regression")
    assert result["passed"]
    assert [(c["metric"], c["rule"]) for c in result["checks"]] == [
        ("r2", "min"),
        ("r2", "max_regression"),
    ]
    skipped = {(s["metric"], s["rule"]) for s in result["skipped"]}
    assert skipped == {
        ("accuracy", "min"),
        ("f1_macro", "min"),
        ("accuracy", "max_regression"),
        ("f1_macro", "max_regression"),
    }
    assert all(
        s["reason"] == "a classification metric; this is a regression model"
        for s in result["skipped"]
    )
    assert "_Not checked: `accuracy` (min): a classification metric" in gate_section(result)


def test_the_committed_gate_of_a_classification_model_is_as_before():
    head = {"accuracy": 0.97, "f1_macro": 0.96, "loss": 0.1}
    result = evaluate(committed_gate(), head, {"accuracy": 0.97, "f1_macro": 0.96})
    assert "skipped" not in result and result["passed"]
    assert [c["metric"] for c in result["checks"]] == ["accuracy", "f1_macro"] * 2
    assert "Not checked" not in gate_section(result)


def test_a_wrecked_regression_head_fails_the_gate_naming_the_metric():
    wrecked = {"rmse": 150.0, "mae": 140.0, "r2": -12.0, "loss": 22500.0, "n_test": N}
    result = evaluate(committed_gate(), wrecked, BASE_METRICS, task="regression")
    assert not result["passed"]
    line = verdict_line(result)
    assert "FAILED (2 of 2 checks)" in line and "r2 -12 < 0" in line
    assert "r2 0.55 -> -12: worse by 12.55 (over 0.05)" in line


def test_a_fork_sets_ceilings_and_allowed_regressions_for_rmse():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["gate"]["regression"] = {"max": {"rmse": 9.0}, "max_regression": {"mae": 0.2}}
    gate = GateConfig.from_params(params)
    result = evaluate(gate, HEAD, BASE_METRICS, task="regression")
    reasons = {c["metric"]: (c["ok"], c["reason"]) for c in result["checks"]}
    assert reasons["rmse"] == (False, "rmse 9.5 > 9")
    assert reasons["mae"] == (True, "mae 8 -> 7.5: no regression")  # lower: a drop is a gain
    worse = evaluate(gate, {**HEAD, "mae": 8.5}, BASE_METRICS, task="regression")
    assert "mae 8 -> 8.5: worse by 0.5 (over 0.2)" in verdict_line(worse)
    # The task's rules do not reach a classification model.
    assert "skipped" not in evaluate(gate, {"accuracy": 0.99, "f1_macro": 0.99}, None)


def test_a_metric_of_the_models_own_task_still_fails_when_missing():
    result = evaluate(GateConfig(max={"rmse": 9.0}), {"r2": 0.5}, None, task="regression")
    assert not result["passed"] and "'rmse' is missing" in result["checks"][0]["reason"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"regression": {"floor": {"r2": 0}}}, "'gate.regression' must map some of"),
        ({"regression": {"min": {"r2": "high"}}}, "'gate.regression.min.r2' must be a number"),
        ({"regression": {"max_regression": {"mae": -1}}}, "gate.regression.max_regression.mae"),
        ({"ranking": {}}, "unknown key 'gate.ranking'"),
    ],
)
def test_a_bad_task_section_is_refused_naming_the_key(section, message):
    with pytest.raises(GateConfigError, match=message):
        GateConfig.from_params({"gate": section})


def test_regression_needs_significance_works_for_rmse_and_mae():
    gate = GateConfig(max_regression={"rmse": 0.1, "mae": 0.1}, regression_needs_significance=True)
    base = {"rmse": rmse(BASE_ERRORS), "mae": float(np.mean(np.abs(BASE_ERRORS)))}
    # Half the errors 20% smaller, half 25% larger: worse on average, but not significantly.
    noisy = BASE_ERRORS * np.where(np.arange(N) % 2 == 0, 0.8, 1.25)
    head = {"rmse": rmse(noisy), "mae": float(np.mean(np.abs(noisy)))}
    noise = sig_of(noisy)
    assert head["mae"] - base["mae"] > 0.1 and noise["verdict"] == "within noise"
    result = evaluate(gate, head, base, noise, task="regression")
    assert result["passed"] and all("within noise" in c["reason"] for c in result["checks"])
    doubled = 2 * BASE_ERRORS
    real = sig_of(doubled)
    head = {"rmse": rmse(doubled), "mae": float(np.mean(np.abs(doubled)))}
    result = evaluate(gate, head, base, real, task="regression")
    assert not result["passed"] and all(
        ", significant (p = " in c["reason"] for c in result["checks"]
    )


def test_significance_keeps_a_real_change_of_rmse_marked_within_tolerance():
    gate = GateConfig(tolerance={"rmse": 100.0, "mae": 100.0})
    sig = sig_of(2 * BASE_ERRORS)
    diff = {
        METRICS_FILE: {
            "rmse": {"old": 10.0, "new": 20.0},
            "mae": {"old": 8.0, "new": 16.0},
            "r2": {"old": 0.5, "new": 0.4},
        }
    }
    tables = settle_marks(metric_tables(diff, gate, cwd="/nonexistent"), gate, sig)
    marks = {r["name"]: r["mark"] for r in tables[0]["rows"]}
    assert marks == {"rmse": "worse", "mae": "worse", "r2": "worse"}
    quiet = settle_marks(metric_tables(diff, gate, cwd="/nonexistent"), gate, sig_of(BASE_ERRORS))
    assert {r["name"]: r["mark"] for r in quiet[0]["rows"]}["rmse"] == "unchanged"


def test_the_report_says_which_items_got_better_and_ends_in_the_verdict():
    report = {
        "base": {"rev": "a" * 40, "short": "aaaaaaa", "label": "main"},
        "head": {"rev": "b" * 40, "short": "bbbbbbb", "dirty": False},
        "gate": {"passed": True, "checks": []},
        "significance": sig_of(2 * BASE_ERRORS),
    }
    section = render(report, images="none").split("#### Is the difference real?")[1].strip()
    assert section.startswith(
        f"Of {N} test items, head's absolute error is **smaller on 0** and **larger on {N}** "
        "than base's."
    )
    assert "| `rmse` | +" in section and "| `mae` | +" in section
    assert section.splitlines()[-1] == "Verdict at α = 0.05: **significant**"


# ---------------------------------------------------------------------------------- plots


def plot_repo(tmp_path: Path, base: dict[str, str], head: dict[str, str]) -> Path:
    """A git + DVC repository with this project's top-level `plots:` and the given files at the
    base commit and in the workspace."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}, sort_keys=False))
    for files in (base, head):
        for rel, text in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        if files is base:
            run(["git", "add", "-A"], repo)
            run(["git", "commit", "-q", "-m", "base"], repo)
    return repo


def residuals(errors) -> str:
    return "actual,predicted,residual\n" + "".join(
        f"{a!r},{float(a + e)!r},{float(-e)!r}\n" for a, e in zip(ACTUAL, errors, strict=True)
    )


REGRESSION_PLOTS = {"Predicted vs actual", "Residuals"}


@pytest.mark.slow  # builds a report with its plots: seconds
def test_a_regression_project_gets_its_plots_base_beside_head_and_no_confusion_matrix(tmp_path):
    repo = plot_repo(
        tmp_path,
        {"reports/eval/plots/residuals.csv": residuals(BASE_ERRORS)},
        {
            "reports/eval/plots/residuals.csv": residuals(2 * BASE_ERRORS),
            "reports/eval/predictions.csv": csv_of(2 * BASE_ERRORS),  # never a confusion matrix
        },
    )
    names = {"old": "(base)", "new": "(head)"}
    images = render_plots("HEAD", tmp_path / "out", names, repo)
    assert {i["title"] for i in images} == REGRESSION_PLOTS
    for image in images:
        assert (tmp_path / "out" / image["image"]).stat().st_size > 5000
    shown = json.loads(run([sys.executable, "-m", "dvc", "plots", "show", "--json"], repo).stdout)
    assert {name for name, data in shown["data"].items() if data} == REGRESSION_PLOTS
    values = shown["data"]["Residuals"][0]["content"]["data"]["values"]
    assert len(values) == N and {"predicted", "residual"} <= set(values[0])


@pytest.mark.slow  # builds a report with its plots: seconds
def test_a_classification_project_gets_no_regression_plot(tmp_path):
    pairs = "actual,predicted\n0,0\n1,1\n1,0\n"
    repo = plot_repo(
        tmp_path,
        {"reports/eval/plots/confusion.csv": pairs, "reports/eval/predictions.csv": pairs},
        {},
    )
    images = render_plots("HEAD", tmp_path / "out", {"old": "", "new": ""}, repo)
    assert {i["title"] for i in images} == {"Confusion matrix"}
    shown = json.loads(run([sys.executable, "-m", "dvc", "plots", "show", "--json"], repo).stdout)
    assert {name for name, data in shown["data"].items() if data} == {"Confusion matrix"}


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow  # builds a report with its plots: seconds
def test_report_build_of_a_regression_head_against_its_base(tmp_path):
    """`python -m mlproject.report build` in a repository holding a regression model's files:
    report.json carries the task, Wilcoxon significance and the task's gate; report.md says so."""
    card = json.dumps({"name": "demo", "task": "regression", "sha256": "0" * 64})

    def outputs(errors) -> dict[str, str]:
        metrics = {"rmse": rmse(errors), "mae": float(np.mean(np.abs(errors)))}
        metrics |= {"r2": 0.8 if errors is BASE_ERRORS else -0.2, "loss": 1.0, "n_test": N}
        return {
            METRICS_FILE: json.dumps(metrics),
            "reports/eval/predictions.csv": csv_of(errors),
            "reports/eval/plots/residuals.csv": residuals(errors),
            "models/model_card.json": card,
        }

    repo = plot_repo(tmp_path, outputs(BASE_ERRORS), {})
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"metrics": [METRICS_FILE], **dvc_yaml}))
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    run("git add -A && git commit -q -m 'base with metrics' && git tag base", repo)
    for rel, text in outputs(2 * BASE_ERRORS).items():
        (repo / rel).write_text(text)
    build = [sys.executable, "-m", "mlproject.report", "build", "--base", "base"]
    build += ["--head-outputs", "as-is", "--base-outputs", "committed", "--no-latency"]
    run(build, repo)
    report = json.loads((repo / "reports/pr/report.json").read_text())
    assert report["task"] == "regression"
    sig = report["significance"]
    assert sig["verdict"] == "significant" and sig["rmse"]["worsened"] == N
    assert not report["gate"]["passed"]
    assert {c["metric"] for c in report["gate"]["checks"] if not c["ok"]} == {"r2"}
    assert {s["metric"] for s in report["gate"]["skipped"]} == {"accuracy", "f1_macro"}
    assert {p["title"] for p in report["plots"]} == REGRESSION_PLOTS
    md = (repo / "reports/pr/report.md").read_text()
    assert md.startswith("### ❌ Quality gate: FAILED (2 of 2 checks): r2 -0.2 < 0")
    assert "🔴 worse (lower is better)" in md and "**larger on 200**" in md
    assert "![Predicted vs actual](plots/predicted-vs-actual.png)" in md
    gate = run([*build[:3], "gate", "--from-report", "reports/pr/report.json"], repo, check=False)
    assert gate.returncode == 1 and "r2 -0.2 < 0" in gate.stdout


def test_latency_feeds_every_input_of_a_table_model(tmp_path):
    """A table model has one input per column, numbers and strings (the report times it too)."""
    import onnx
    from onnx import TensorProto, helper

    from mlproject.report.model import latencies

    graph = helper.make_graph(
        [helper.make_node("Identity", ["Horsepower"], ["prediction"])],
        "table",
        [
            helper.make_tensor_value_info("Horsepower", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("Origin", TensorProto.STRING, [None, 1]),
        ],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "model.onnx")
    times = latencies({"old": None, "new": str(tmp_path / "model.onnx")}, runs=5, warmup=1)
    assert times["old"] is None and times["new"] > 0
