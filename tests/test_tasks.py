"""The task boundary (mlproject.tasks): the registry, each task's metrics and evaluation files,
and the Wilcoxon signed-rank test checked against scipy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from mlproject import tasks
from mlproject.tasks import classification, regression
from mlproject.tasks.stats import wilcoxon

from conftest import ENV

# ---------------------------------------------------------------------------------- registry


def test_the_registry_finds_each_task_by_name_and_defaults_to_classification():
    assert tasks.get(None) is classification and tasks.get("regression") is regression
    assert tasks.for_config(OmegaConf.create({"kind": "table", "task": "regression"})) is regression
    assert tasks.for_config(OmegaConf.create({"kind": "images"})) is classification
    assert tasks.for_card({"input": {}}) is classification  # a card without `task`
    assert tasks.for_card({"task": "regression"}) is regression
    assert tasks.name_of(None) == "classification"
    with pytest.raises(tasks.TaskError, match=r"unknown task 'ranking'.*classification"):
        tasks.get("ranking")


def test_metrics_belong_to_one_task_or_to_all():
    assert tasks.owner("accuracy") == "classification" and tasks.owner("rmse") == "regression"
    assert tasks.owner("loss") is None and tasks.owner("n_test") is None


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_module_has_the_whole_report_side(name):
    task = tasks.get(name)
    assert name == task.NAME
    assert set(task.SIGNIFICANCE_METRICS) <= set(task.METRICS)
    for function in ("metrics", "evaluation_files", "read_predictions", "compare"):
        assert callable(getattr(task, function)), function
    files = task.evaluation_files(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    assert "predictions.csv" in files and set(task.PLOT_FILES) <= set(files)
    assert files["predictions.csv"].startswith("actual,predicted\n")


def test_the_task_modules_load_without_torch():
    code = (
        "import sys, mlproject.tasks as t; [t.get(n) for n in t.TASKS]; "
        "import mlproject.report.significance, mlproject.report.gate; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV)


# ------------------------------------------------------------------------- regression metrics


def test_regression_metrics_match_scikit_learn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    y = rng.normal(150, 40, 300)
    p = (y + rng.normal(0, 20, 300)).astype(np.float32)
    got = regression.metrics(y, p)
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)), rel=1e-12)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert got["r2"] == pytest.approx(r2_score(y, p), rel=1e-12)
    constant = np.full(5, 3.0)
    assert regression.metrics(constant, constant)["r2"] == r2_score(constant, constant) == 1.0
    assert regression.metrics(constant, constant + 1)["r2"] == r2_score(constant, constant + 1)
    with pytest.raises(ValueError, match="3 actual values, 2 predicted"):
        regression.metrics([1.0, 2.0, 3.0], [1.0, 2.0])


def test_regression_evaluation_files_read_back_exactly():
    actual = np.array([151.0, 75.0, 141.5])
    predicted = np.array([140.1, 80.3, 141.5], dtype=np.float32)
    files = regression.evaluation_files(actual, predicted)
    assert files["predictions.csv"] == "actual,predicted\n151.0,140.1\n75.0,80.3\n141.5,141.5\n"
    a, p = regression.read_predictions(files["predictions.csv"], "predictions.csv")
    assert a == actual.tolist() and np.array_equal(np.float32(p), predicted)
    rows = [line.split(",") for line in files["plots/residuals.csv"].splitlines()]
    assert rows[0] == ["actual", "predicted", "residual"]
    for (a_text, p_text, r_text), a_value, p_value in zip(rows[1:], actual, predicted, strict=True):
        assert float(r_text) == a_value - float(p_value)  # actual - predicted
        assert float(a_text) == a_value and np.float32(p_text) == p_value


def test_a_prediction_that_is_not_a_number_is_named_with_its_row():
    from mlproject.tasks.stats import NotComparable

    with pytest.raises(NotComparable, match=r"head: row 3: 'predicted' is 'nan'"):
        regression.read_predictions("actual,predicted\n1,2\n3,nan\n", "head")
    with pytest.raises(NotComparable, match=r"row 2: 'actual' is 'x'"):
        regression.read_predictions("actual,predicted\nx,2\n", "base")


# --------------------------------------------------------------------- classification metrics


def test_classification_metrics_and_files_are_what_the_evaluate_stage_wrote():
    """Moved from pipeline/evaluate.py: the same numbers and the same bytes."""
    rng = np.random.default_rng(0)
    classes = ["Europe", "Japan", "USA"]
    y = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    summary, per_class = classification.per_class_metrics(y, pred, classes)
    assert classification.metrics(y, pred, classes) == summary
    files = classification.evaluation_files(y, pred, classes)
    assert files["classes.json"] == json.dumps(per_class, indent=2) + "\n"
    matrix = classification.confusion_matrix(y, pred, 3).tolist()
    assert json.loads(files["confusion_matrix.json"]) == {"labels": classes, "matrix": matrix}
    expected = "actual,predicted\n" + "".join(
        f"{classes[a]},{classes[p]}\n" for a, p in zip(y, pred, strict=True)
    )
    assert files["predictions.csv"] == files["plots/confusion.csv"] == expected
    first = files["classes.csv"].splitlines()[:2]
    europe = per_class["Europe"]
    assert first == [
        "class,precision,recall,f1,support",
        f"Europe,{round(europe['precision'], 6)},{round(europe['recall'], 6)},"
        f"{round(europe['f1'], 6)},{europe['support']}",
    ]


# ---------------------------------------------------------------------------------- Wilcoxon


def _scipy(d):
    from scipy.stats import wilcoxon as reference

    result = reference(d)
    return float(result.statistic), float(result.pvalue)


@pytest.mark.parametrize(
    ("n", "seed", "shift", "method"),
    [
        (8, 0, 0.0, "exact"),
        (20, 1, 0.5, "exact"),
        (50, 2, 0.3, "exact"),  # the largest exact case
        (51, 3, 0.3, "normal approximation"),
        (400, 4, 0.1, "normal approximation"),
    ],
)
def test_wilcoxon_matches_scipy_without_ties(n, seed, shift, method):
    d = np.random.default_rng(seed).normal(shift, 1.0, n)
    statistic, p_value, used = wilcoxon(d)
    assert used == method
    ref_statistic, ref_p = _scipy(d)
    assert statistic == ref_statistic
    assert p_value == pytest.approx(ref_p, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("n", [20, 49, 200])
def test_wilcoxon_matches_scipy_with_ties_and_zeros(n):
    rng = np.random.default_rng(n)
    d = np.round(rng.normal(0.3, 1.0, n), 1)  # ties in |d|, and some zeros
    d[:3] = 0.0
    statistic, p_value, used = wilcoxon(d)
    assert used == "normal approximation"
    ref_statistic, ref_p = _scipy(d)
    assert statistic == ref_statistic
    assert p_value == pytest.approx(ref_p, rel=1e-9)


def test_wilcoxon_of_no_differences_is_no_evidence():
    assert wilcoxon(np.zeros(30))[1] == 1.0
