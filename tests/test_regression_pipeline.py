"""Regression as a task, the pipeline and the PR report: the shipped demo (scikit-learn's
diabetes data in data/diabetes.csv, `task: regression`) selected as a fork would, no code edit;
a number predicted, with rmse/mae/r2, an ONNX graph whose output is the prediction, a profile
of the predicted value, and a gate and significance test that know lower is better."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from conftest import copy_repo, run

pytestmark = pytest.mark.slow


def read(path):
    return json.loads(path.read_text())


def test_repro_trains_a_regression_model_from_the_csv(regression_repo):
    repo = regression_repo
    metrics = read(repo / "reports/eval/metrics.json")
    assert set(metrics) == {"rmse", "mae", "r2", "loss", "n_test"}
    assert metrics["r2"] > 0.3 and metrics["mae"] < metrics["rmse"]  # a real fit, not the mean
    rows = list(csv.DictReader((repo / "reports/eval/predictions.csv").open()))
    assert len(rows) == metrics["n_test"] and {"actual", "predicted"} <= set(rows[0])
    float(rows[0]["predicted"])
    assert not (repo / "reports/eval/classes.json").exists()  # a classifier's file
    card = read(repo / "models/model_card.json")
    assert card["task"] == "regression" and card["classes"] == []
    assert [o["name"] for o in card["outputs"]] == ["prediction"]
    assert card["output"]["shape"] == [-1, 1]
    train = read(repo / "reports/train/metrics.json")
    assert "val.rmse" in json.dumps(train) or "rmse" in train.get("val", {})
    profile = read(repo / "models/reference_profile.json")
    assert profile["task"] == "regression" and profile["predicted"]["n"] == metrics["n_test"]
    rules = (repo / "deploy/prometheus/reference.rules.yml").read_text()
    assert "mlserve:reference_prediction_quantile" in rules
    assert read(repo / "reports/explain/attributions.json")["metric"] == "rmse"
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_the_onnx_prediction_is_in_the_targets_units_and_matches_pytorch(regression_repo):
    import onnxruntime as ort
    import pandas as pd
    import torch

    from mlproject.kinds.table.encode import encode, feed
    from mlproject.pipeline.train import load_checkpoint

    card = read(regression_repo / "models/model_card.json")
    session = ort.InferenceSession(str(regression_repo / "models/model.onnx"))
    test = pd.read_parquet(regression_repo / "outputs/prepared/test.parquet")
    (prediction,) = session.run(["prediction"], feed(test, card["input"]))
    assert prediction.shape == (len(test), 1)
    actual = test["progression"].to_numpy()
    rmse = float(np.sqrt(np.mean((prediction[:, 0] - actual) ** 2)))
    assert rmse == pytest.approx(
        read(regression_repo / "reports/eval/metrics.json")["rmse"], rel=1e-4
    )
    model, payload = load_checkpoint(regression_repo / "outputs/model.pt")
    assert set(payload["target"]) == {"mean", "std"}
    with torch.no_grad():
        expected = model(torch.from_numpy(encode(test, card["input"]))).numpy()
    assert np.abs(prediction - expected).max() < 1e-3  # float32 on values of about 150


def _branch(repo, name: str, edits: dict[str, str]) -> None:
    run(["git", "checkout", "-qb", name], repo)
    config = repo / "conf/config.yaml"
    text = config.read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    run([sys.executable, "-m", "mlproject.pipeline.config"], repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", name, "--allow-empty"], repo)


def test_a_wrecked_head_fails_the_gate_naming_the_metric_and_is_significant(
    regression_repo, tmp_path
):
    repo = copy_repo(regression_repo, tmp_path / "repo")
    _branch(
        repo, "wreck", {"  epochs: 40\n": "  epochs: 1\n", "  lr: 0.003\n": "  lr: 0.0000001\n"}
    )
    run([sys.executable, "-m", "mlproject.report", "build", "--base", "main"], repo)
    report = read(repo / "reports/pr/report.json")
    sig = report["significance"]
    assert sig["verdict"] == "significant", sig
    assert sig["rmse"]["delta"] > 0 and sig["rmse"]["worsened"] > sig["rmse"]["improved"]
    gate = run(
        [sys.executable, "-m", "mlproject.report", "gate", "--base", "main"], repo, check=False
    )
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "r2" in gate.stdout + gate.stderr or "rmse" in gate.stdout + gate.stderr


def test_a_head_identical_to_the_base_is_within_noise(regression_repo, tmp_path):
    repo = copy_repo(regression_repo, tmp_path / "repo")
    run(["git", "checkout", "-qb", "same"], repo)
    run(["git", "commit", "-qm", "nothing", "--allow-empty"], repo)
    run([sys.executable, "-m", "mlproject.report", "build", "--base", "main"], repo)
    sig = read(repo / "reports/pr/report.json")["significance"]
    assert sig["verdict"] == "within noise", sig
    gate = run(
        [sys.executable, "-m", "mlproject.report", "gate", "--base", "main"], repo, check=False
    )
    assert gate.returncode == 0, gate.stdout + gate.stderr
