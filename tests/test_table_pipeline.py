"""The table demo end to end, as a fork with a CSV would run it: `data=cars` (vega-datasets' cars,
numbers, categories and missing values in data/cars.csv) and `model=mlp` in conf/config.yaml, no
code edit; then the pipeline, the ONNX graph on raw rows, the PR report and gate on a branch."""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest

from conftest import copy_repo, run

pytestmark = pytest.mark.slow


def read(path):
    return json.loads(path.read_text())


def test_repro_makes_every_output_from_the_csv(table_repo):
    meta = read(table_repo / "outputs/prepared/meta.json")
    assert meta["kind"] == "table" and meta["classes"] == ["Europe", "Japan", "USA"]
    columns = {c["name"]: c for c in meta["input"]["columns"]}
    assert "Name" not in columns and "Origin" not in columns  # dropped; the target
    assert columns["Cylinders"]["type"] == "categorical"  # listed in categorical:
    assert columns["Year"]["type"] == "categorical"  # a string column
    assert columns["Horsepower"]["type"] == "numeric" and columns["Horsepower"]["missing_rate"] > 0
    assert sum(meta["rows"].values()) == 406 - meta["dropped"].get("duplicates", 0)

    metrics = read(table_repo / "reports/eval/metrics.json")
    assert {"accuracy", "f1_macro", "loss", "n_test"} <= set(metrics)
    assert metrics["accuracy"] > 0.6  # 3 classes, USA about 62% of the rows
    card = read(table_repo / "models/model_card.json")
    assert card["input"]["kind"] == "table"
    assert [t["name"] for t in card["input"]["inputs"]] == list(columns)
    assert {t["datatype"] for t in card["input"]["inputs"]} == {"FP32", "BYTES"}
    for out in ("reports/explain/attributions.png", "models/reference_profile.json"):
        assert (table_repo / out).is_file()
    assert "up to date" in run(["dvc", "status"], table_repo).stdout


def test_the_onnx_graph_takes_raw_rows_with_missing_and_unseen_values(table_repo):
    import onnxruntime as ort
    import pandas as pd
    import torch

    from mlproject.kinds.table.encode import encode, feed
    from mlproject.pipeline.train import load_checkpoint

    card = read(table_repo / "models/model_card.json")
    session = ort.InferenceSession(str(table_repo / "models/model.onnx"))
    assert [i.name for i in session.get_inputs()] == [t["name"] for t in card["input"]["inputs"]]
    test = pd.read_parquet(table_repo / "outputs/prepared/test.parquet").head(8).copy()
    test.loc[test.index[0], "Horsepower"] = math.nan  # a missing number
    test.loc[test.index[1], "Cylinders"] = None  # a missing category
    test.loc[test.index[2], "Year"] = "2031-01-01"  # a category never seen in training
    spec = card["input"]
    _, probs = session.run(["logits", "probabilities"], feed(test, spec))
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    model, _ = load_checkpoint(table_repo / "outputs/model.pt")
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(encode(test, spec))), 1).numpy()
    assert np.abs(probs - expected).max() < 1e-5


def test_explain_ranks_every_column(table_repo):
    summary = read(table_repo / "reports/explain/attributions.json")
    spec = read(table_repo / "models/model_card.json")["input"]
    assert json.dumps(summary).count('"Horsepower"') >= 1
    named = json.dumps(summary)
    assert all(f'"{c["name"]}"' in named for c in spec["columns"])


def test_a_model_that_does_not_take_a_table_is_refused_by_name(table_repo, tmp_path):
    from mlproject.pipeline.config import ConfigError, compose
    from mlproject.pipeline.train import train

    cfg = compose(["data=cars", "model=cnn", "train.epochs=1"])
    with pytest.raises(ConfigError, match=r"model=mlp"):
        train(cfg, table_repo / "outputs/prepared", tmp_path / "model.pt", live_dir=None)
    assert not (tmp_path / "model.pt").exists()


def test_report_and_gate_on_a_branch(table_repo, tmp_path):
    repo = copy_repo(table_repo, tmp_path / "repo")
    run(["git", "checkout", "-qb", "wreck"], repo)
    config = repo / "conf/config.yaml"
    text = config.read_text().replace("  epochs: 40\n", "  epochs: 1\n")
    config.write_text(text.replace("  lr: 0.003\n", "  lr: 0.0000001\n"))
    run([sys.executable, "-m", "mlproject.pipeline.config"], repo)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a wrecked model"], repo)
    run([sys.executable, "-m", "mlproject.report", "build", "--base", "main"], repo)
    report = read(repo / "reports/pr/report.json")
    assert report["metrics"], report
    assert "significance" in report
    gate = run(
        [sys.executable, "-m", "mlproject.report", "gate", "--base", "main"], repo, check=False
    )
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "accuracy" in gate.stdout + gate.stderr


def test_the_server_predict_and_monitor_work_on_raw_rows(table_repo, tmp_path):
    """`make serve` on the table model with tritonclient and /predict, the release smoke test,
    `make predict` on the CSV, then `make monitor` on the traffic the server logged."""
    import os

    import pandas as pd
    import tritonclient.http as triton

    from mlproject.ops.smoke import smoke
    from mlproject.serve.client import request
    from mlproject.serve.process import ServerProcess

    card = read(table_repo / "models/model_card.json")
    test = pd.read_parquet(table_repo / "outputs/prepared/test.parquet")
    logs = tmp_path / "logs"
    with ServerProcess(
        table_repo / "models/model.onnx",
        table_repo / "models/model_card.json",
        env={"PREDICTION_LOG": str(logs)},
        cwd=table_repo,
    ) as server:
        client = triton.InferenceServerClient(f"{server.host}:{server.port}")
        meta = client.get_model_metadata(card["name"])
        assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
            t["name"]: t["datatype"] for t in card["input"]["inputs"]
        }
        rows = test.head(4)
        inputs = []
        for column in card["input"]["columns"]:
            values = rows[column["name"]]
            if column["type"] == "numeric":
                t = triton.InferInput(column["name"], [len(rows), 1], "FP32")
                t.set_data_from_numpy(values.to_numpy(np.float32).reshape(-1, 1))
            else:
                t = triton.InferInput(column["name"], [len(rows), 1], "BYTES")
                t.set_data_from_numpy(
                    np.array([v if v is not None else "" for v in values], dtype=object).reshape(
                        -1, 1
                    )
                )
            inputs.append(t)
        result = client.infer(card["name"], inputs)
        probs = result.as_numpy("probabilities")
        assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)

        # Traffic like training's, enough for the monitor's window (monitor.drift.min_records).
        traffic = pd.read_parquet(table_repo / "outputs/prepared/train.parquet").head(120)
        records = json.loads(traffic.drop(columns=["Origin"]).to_json(orient="records"))

        def post(rows):
            body = json.dumps({"rows": rows}).encode()
            headers = {"Content-Type": "application/json"}
            status, _, answer = request(server.host, server.port, "POST", "/predict", body, headers)
            return status, answer

        answers = []
        for start in range(0, len(records), 60):  # MAX_BATCH is 64
            status, body = post(records[start : start + 60])
            assert status == 200, body
            answers += json.loads(body)["predictions"]
        assert len(answers) == 120 and all(a["class"] in card["classes"] for a in answers)
        bad = dict(records[0])
        del bad["Horsepower"]
        status, body = post([bad])
        assert status == 400 and b"Horsepower" in body
        smoke(f"http://{server.host}:{server.port}", card, wait_s=10)

    out = tmp_path / "predictions.csv"
    made = run(
        ["make", "predict", "INPUT=data/cars.csv", f"OUTPUT={out}"],
        table_repo,
        env={**os.environ, "PATH": f"{sys.prefix}/bin:{os.environ['PATH']}"},
    )
    assert made.returncode == 0
    scored = list(csv.DictReader(out.open()))
    assert len(scored) == 406 and {r["class"] for r in scored} <= set(card["classes"])

    report = tmp_path / "monitor"
    monitored = run(
        [
            sys.executable,
            "-m",
            "mlproject.monitor.drift",
            "--logs",
            str(logs),
            "--out",
            str(report),
        ],
        table_repo,
        check=False,
    )
    assert monitored.returncode in (0, 1), monitored.stdout + monitored.stderr
    drift = read(report / "drift.json")
    named = json.dumps(drift)
    assert all(f'"{c["name"]}"' in named for c in card["input"]["columns"])
