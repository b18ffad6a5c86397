"""Serving a regression model (the shipped diabetes demo, `regression_repo`): the Open Inference
Protocol's `prediction` output (FP32 [N, 1]), /predict's `{"prediction": value}` per row (JSON
and CSV), the OpenAPI document, the predicted-value histogram, the prediction log's numbers and
ids, tritonclient and the release smoke test on a real socket, and `make predict`."""

from __future__ import annotations

import csv
import json
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from mlproject.serve.app import create_app
from mlproject.serve.settings import Settings

from tooling import multipart

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

# Tests marked slow use the regression_repo fixture (it runs the pipeline once per session).
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(regression_repo):
    models = regression_repo / "models"
    return SimpleNamespace(
        onnx=models / "model.onnx",
        card_path=models / "model_card.json",
        card=json.loads((models / "model_card.json").read_text()),
        profile=json.loads((models / "reference_profile.json").read_text()),
    )


@pytest.fixture(scope="module")
def rows(regression_repo, model):
    """Five rows of the data as a client sends them (the target left out), and what
    onnxruntime itself predicts for them."""
    card = model.card
    with open(regression_repo / "data/diabetes.csv", newline="") as fh:
        records = list(csv.DictReader(fh))[:5]
    out = []
    for r in records:
        out.append(
            {
                c["name"]: float(r[c["name"]]) if c["type"] == "numeric" else r[c["name"]]
                for c in card["input"]["columns"]
            }
        )
    session = ort.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"])
    (want,) = session.run(["prediction"], feed(out, card))
    return out, want[:, 0]


def feed(rows: list[dict], card: dict) -> dict[str, np.ndarray]:
    return {
        c["name"]: np.array(
            [[r[c["name"]]] for r in rows],
            dtype=np.float32 if c["type"] == "numeric" else object,
        )
        for c in card["input"]["columns"]
    }


def tensors(rows: list[dict], card: dict) -> list[dict]:
    return [
        {
            "name": c["name"],
            "shape": [len(rows), 1],
            "datatype": "FP32" if c["type"] == "numeric" else "BYTES",
            "data": [[r[c["name"]]] for r in rows],
        }
        for c in card["input"]["columns"]
    ]


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("predlog")
    app = create_app(Settings(model=model.onnx, card=model.card_path, prediction_log=log_dir))
    with TestClient(app) as test_client:
        test_client.log_dir = log_dir
        yield test_client


def metric_values(client, name: str) -> dict[str, float]:
    """{series with labels: value} of one metric family."""
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


@pytest.mark.slow
def test_infer_returns_the_prediction_per_row_and_no_classes(client, model, rows):
    card = model.card
    data, want = rows
    infer = f"/v2/models/{card['name']}/infer"
    before = metric_values(client, "mlserve_predicted_value")
    r = client.post(infer, json={"id": "batch-1", "inputs": tensors(data, card)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "batch-1"
    (out,) = body["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("prediction", "FP32", [5, 1])
    np.testing.assert_allclose(out["data"], want, rtol=1e-6)
    # The histogram observed each of the five values in its bucket; buckets are the profile's.
    after = metric_values(client, "mlserve_predicted_value")
    profile = model.profile["predicted"]
    values = [profile["min"], profile["max"], *profile["quantiles"].values()]
    bounds = sorted({float(f"{v:.6g}") for v in values})
    assert len(bounds) == 7
    for bound in bounds:
        key = f'mlserve_predicted_value_bucket{{api="infer",le="{bound}"}}'
        assert after[key] - before.get(key, 0) == int(np.sum(want <= bound)), key
    count = 'mlserve_predicted_value_count{api="infer"}'
    assert after[count] - before.get(count, 0) == 5
    assert not metric_values(client, "mlserve_predictions_total")  # no class counter
    # No classes: no classification extension, and asking for it is a 400 naming the field.
    assert "classification" not in client.get("/v2").json()["extensions"]
    r = client.post(
        infer,
        json={
            "inputs": tensors(data, card),
            "outputs": [{"name": "prediction", "parameters": {"classification": 2}}],
        },
    )
    assert r.status_code == 400 and "classification" in r.json()["error"], r.text


@pytest.mark.slow
def test_predict_json_rows_and_csv_answer_a_number_with_ids(client, model, rows):
    data, want = rows
    r = client.post(
        "/predict",
        json={"rows": [{**data[0], "id": "patient-7"}, *data[1:3]]},
        headers={"X-Request-ID": "visit-3"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "visit-3"
    got = body["predictions"]
    assert [p["id"] for p in got] == ["patient-7", "visit-3#1", "visit-3#2"]
    assert [set(p) for p in got] == [{"input", "id", "prediction"}] * 3
    np.testing.assert_allclose([p["prediction"] for p in got], want[:3], rtol=1e-6)
    # A CSV upload: an `id` column is the row's id (not a feature), the target is ignored.
    columns = ["id", "progression", *data[0]]
    lines = [",".join(columns)] + [
        ",".join([f"row-{i}", "100", *(str(v) for v in row.values())]) for i, row in enumerate(data)
    ]
    upload, headers = multipart([("visits.csv", ("\n".join(lines) + "\n").encode())])
    r = client.post("/predict", content=upload, headers=headers)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [p["id"] for p in got] == [f"row-{i}" for i in range(5)]
    np.testing.assert_allclose([p["prediction"] for p in got], want, rtol=1e-6)
    # The served OpenAPI document says what this model answers.
    item = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]["200"]
    item = item["content"]["application/json"]["schema"]["properties"]["predictions"]["items"]
    assert "prediction" in item["properties"] and "class" not in item["properties"]


@pytest.mark.slow
def test_bad_requests_get_a_400_naming_the_column_or_id(client, model, rows):
    card = model.card
    data, _ = rows
    bad = {k: v for k, v in data[0].items() if k != "bmi"}
    r = client.post("/predict", json={"rows": [bad]})
    assert r.status_code == 400 and "bmi" in r.json()["error"], r.text
    r = client.post("/predict", json={"rows": [{**data[0], "id": 1.5}]})
    assert r.status_code == 400 and "rows[0].id" in r.json()["error"], r.text
    r = client.post(
        f"/v2/models/{card['name']}/infer",
        json={"inputs": [t for t in tensors(data, card) if t["name"] != "s5"]},
    )
    assert r.status_code == 400 and "s5" in r.json()["error"], r.text
    r = client.post(
        f"/v2/models/{card['name']}/infer", json={"id": "x" * 300, "inputs": tensors(data, card)}
    )
    assert r.status_code == 400 and r.json()["error"].startswith("id:"), r.text


@pytest.mark.slow
def test_prediction_log_records_the_number_and_the_id(model, rows, tmp_path):
    card = model.card
    data, want = rows
    settings = Settings(model=model.onnx, card=model.card_path, prediction_log=tmp_path)
    with TestClient(create_app(settings)) as client:
        infer = f"/v2/models/{card['name']}/infer"
        r = client.post(infer, json={"id": "a", "inputs": tensors(data[:2], card)})
        assert r.is_success, r.text
        headers = {"X-Request-ID": "b"}
        r = client.post(infer, json={"inputs": tensors(data[2:3], card)}, headers=headers)
        assert r.is_success, r.text
        r = client.post("/predict", json={"rows": [{**data[3], "id": 41}, data[4]]})
        assert r.is_success, r.text
        made = r.json()["id"]  # no id given: the server made one
    # Leaving the client drained the log.
    records = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["a#0", "a#1", "b", "41", f"{made}#1"]
    assert [r["route"] for r in records] == ["infer"] * 3 + ["predict"] * 2
    assert all("confidence" not in r and isinstance(r["predicted"], float) for r in records)
    np.testing.assert_allclose([r["predicted"] for r in records], want, rtol=1e-6)
    assert records[0]["features"]["bmi"] == pytest.approx(data[0]["bmi"])


@pytest.mark.slow
def test_tritonclient_and_the_smoke_test_on_a_real_socket(model, rows):
    import tritonclient.http as triton

    from mlproject.ops.smoke import smoke
    from mlproject.serve.process import ServerProcess

    card = model.card
    data, want = rows
    with ServerProcess(model.onnx, model.card_path) as server:
        client = triton.InferenceServerClient(f"{server.host}:{server.port}")
        meta = client.get_model_metadata(card["name"])
        assert meta["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}]
        inputs = []
        for name, array in feed(data, card).items():
            datatype = "BYTES" if array.dtype == object else "FP32"
            t = triton.InferInput(name, list(array.shape), datatype)
            t.set_data_from_numpy(array)  # binary tensors, tritonclient's default
            inputs.append(t)
        result = client.infer(card["name"], inputs, request_id="t-1")
        assert result.get_response()["id"] == "t-1"
        np.testing.assert_allclose(result.as_numpy("prediction")[:, 0], want, rtol=1e-6)
        answer = smoke(server.url, card, wait_s=10)
        assert isinstance(answer["predict"]["predictions"][0]["prediction"], float)


@pytest.mark.slow
def test_make_predict_writes_id_and_prediction(model, rows, tmp_path):
    data, want = rows
    columns = list(data[0])

    def write(path: Path, rows: list[dict]) -> Path:
        lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    source = write(tmp_path / "visits.csv", data)
    out = tmp_path / "scored.csv"

    def make_predict(input_path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "make",
                "--no-print-directory",
                "predict",
                f"INPUT={input_path}",
                f"OUTPUT={out}",
                f"MODEL={model.onnx}",
                f"CARD={model.card_path}",
                "VENV_PREBUILT=1",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = make_predict(source)
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as fh:
        scored = list(csv.DictReader(fh))
    assert list(scored[0]) == ["id", "prediction"]
    assert [r["id"] for r in scored] == [str(i) for i in range(5)]  # no id column: row numbers
    np.testing.assert_allclose([float(r["prediction"]) for r in scored], want, rtol=1e-6)
    out.unlink()
    failed = make_predict(write(tmp_path / "bad.csv", [*data[:2], {**data[2], "bmi": "heavy"}]))
    assert failed.returncode != 0 and "'bmi'" in failed.stderr and "row 3" in failed.stderr
    assert not out.exists()  # nothing half-written


def test_regression_serving_writes_numbers_and_null_and_takes_the_profiles_buckets(tmp_path):
    """The task's serving side alone (no model): answers, CSV cells and log lines of a
    prediction [N, 1], a non-finite one as null/empty, and the histogram's bounds."""
    from mlproject.serve.model import TensorSpec
    from mlproject.serve.predlog import LineFormatter, LogConfig, Rows
    from mlproject.tasks import regression_serving as rs

    card = {"output": {"name": "prediction"}}
    profile = {
        "predicted": {
            "min": 64.18,
            "max": 323.8958,
            "quantiles": {"p05": 71.7458351, "p50": 141.6345825, "p95": 240.8210648},
        }
    }
    task = rs.bind(card, [TensorSpec("prediction", "FP32", [-1, 1])], profile)
    assert task.buckets == (64.18, 71.7458, 141.635, 240.821, 323.896)
    assert rs.bind(card, [TensorSpec("prediction", "FP32", [-1, 1])]).buckets == (
        rs.FALLBACK_BUCKETS
    )
    with pytest.raises(ValueError, match="FP32 \\[N, 1\\]"):
        rs.bind(card, [TensorSpec("prediction", "FP32", [-1, 3])])
    out = np.array([[1.5], [np.nan], [226.13406]], dtype=np.float32)
    assert task.answers([out], top_k=3) == [
        {"prediction": 1.5},
        {"prediction": None},
        {"prediction": 226.13406},
    ]
    assert task.csv_rows([out]) == [["1.5"], [""], ["226.13406"]]
    config = LogConfig(
        directory=str(tmp_path),
        model_name="m",
        model_sha256="0" * 64,
        max_bytes=1 << 20,
        keep=1,
        task="regression",
    )
    lines = LineFormatter(config).text(
        np.array([1.0, 2.0, 3.0]),
        np.array([0, 1, 1], dtype=np.uint8),
        Rows(["bmi"], [[30.5, None, 22.0]]),
        out,
        ["r#0", "r#1", 'q"uote'],
    )
    records = [json.loads(line) for line in lines.splitlines()]
    assert [r["id"] for r in records] == ["r#0", "r#1", 'q"uote']
    assert [r["predicted"] for r in records] == [1.5, None, 226.13406]
    assert all("confidence" not in r for r in records)
