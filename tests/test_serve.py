"""The inference server, as clients see it on a socket: the Open Inference Protocol with
Triton's own client (binary and JSON), the friendly API against the evaluate stage's predictions,
the model card, OpenAPI, a streamed body over the limit, and the metrics of it all.

Every route and every bad input is tested in-process, in seconds, in test_server.py; here one
real server (uvicorn, onnxruntime) runs on a free loopback port for the whole module, on the
model that the pipeline fixture exported.
"""

from __future__ import annotations

import csv
import http.client
import json

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from mlproject.core.preprocess import InputSpec, normalize, open_image, to_pixels
from mlproject.serve.client import request as client_request
from mlproject.serve.process import ServerProcess

from tooling import multipart, png

pytestmark = pytest.mark.slow
MAX_BATCH, MAX_BODY = 64, 200_000


@pytest.fixture(scope="module")
def card(pipeline_repo):
    return json.loads((pipeline_repo / "models/model_card.json").read_text())


@pytest.fixture(scope="module")
def server(pipeline_repo):
    env = {"MAX_BATCH": str(MAX_BATCH), "MAX_BODY_BYTES": str(MAX_BODY)}
    with ServerProcess(
        pipeline_repo / "models/model.onnx",
        pipeline_repo / "models/model_card.json",
        env=env,
        cwd=pipeline_repo,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return triton.InferenceServerClient(f"{server.host}:{server.port}")


@pytest.fixture(scope="module")
def session(pipeline_repo):
    return ort.InferenceSession(
        str(pipeline_repo / "models/model.onnx"), providers=["CPUExecutionProvider"]
    )


def request(server, method, path, body=b"", headers=None):
    """A raw HTTP request (no client library adding headers); returns (status, headers, body)."""
    return client_request(server.host, server.port, method, path, body, headers)


# --- Open Inference Protocol -------------------------------------------------------------------


def test_health_and_metadata_with_triton_client(client, card):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(card["name"])
    meta = client.get_server_metadata()
    assert meta["name"] == "mlproject" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(card["name"])
    assert model["name"] == card["name"] and model["versions"] == [card["sha256"][:12]]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert {"name": "logits", "datatype": "FP32", "shape": [-1, 10]} in model["outputs"]
    versioned = client.get_model_metadata(card["name"], model_version=model["versions"][0])
    assert versioned == model
    assert client.is_model_ready(card["name"], model_version=model["versions"][0])


def test_health_endpoints_raw(server, card):
    assert json.loads(request(server, "GET", "/v2/health/live")[2]) == {"live": True}
    assert json.loads(request(server, "GET", "/v2/health/ready")[2]) == {"ready": True}
    status, _, body = request(server, "GET", f"/v2/models/{card['name']}/ready")
    assert status == 200 and json.loads(body) == {"name": card["name"], "ready": True}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_with_triton_client_matches_onnxruntime(client, card, session, binary):
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    # The client's defaults: binary input, no outputs named -> all outputs, binary.
    outputs = None if binary else [triton.InferRequestedOutput("logits", binary_data=False)]
    result = client.infer(card["name"], [inp], outputs=outputs, request_id="req-7")
    expected = session.run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == card["name"]
    if binary:
        assert "Inference-Header-Content-Length" not in response  # parsed by the client
        names = [o["name"] for o in response["outputs"]]
        assert names == [o.name for o in session.get_outputs()]


def test_infer_classification_extension(client, card, session):
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for binary in (True, False):
        out = triton.InferRequestedOutput("logits", binary_data=binary, class_count=2)
        top = client.infer(card["name"], [inp], outputs=[out]).as_numpy("logits")
        logits = session.run(["logits"], {"input": x})[0]
        assert top.shape == (3, 2)
        for row, want in zip(top, np.argsort(-logits, axis=1)[:, :2], strict=True):
            labels = [(v.decode() if isinstance(v, bytes) else v).split(":") for v in row]
            assert [int(lab[1]) for lab in labels] == want.tolist()
            assert [lab[2] for lab in labels] == [card["classes"][i] for i in want]


# --- the friendly API --------------------------------------------------------------------------


def test_predict_matches_the_evaluate_stage(server, pipeline_repo, card):
    meta = json.loads((pipeline_repo / "outputs/prepared/meta.json").read_text())
    files = meta["files"]["test"]
    with open(pipeline_repo / "reports/eval/predictions.csv") as fh:
        expected = [row["predicted"] for row in csv.DictReader(fh)]
    assert len(files) == len(expected) > 0
    got = []
    for start in range(0, len(files), MAX_BATCH):
        chunk = files[start : start + MAX_BATCH]
        root = pipeline_repo / card["params"]["data"]["root"]  # data/digits
        body, headers = multipart([(f, (root / f).read_bytes()) for f in chunk])
        status, _, raw = request(server, "POST", "/predict?top_k=2", body, headers)
        assert status == 200, raw
        result = json.loads(raw)
        assert result["model"] == card["name"] and result["model_sha256"] == card["sha256"]
        for item, name in zip(result["predictions"], chunk, strict=True):
            assert item["input"].endswith(f"({name})")
            assert len(item["top_k"]) == 2 and item["top_k"][0]["class"] == item["class"]
            assert item["top_k"][0]["probability"] >= item["top_k"][1]["probability"]
            got.append(item["class"])
    assert got == expected


def test_predict_json_pixels_equal_the_file(server, pipeline_repo):
    path = (
        pipeline_repo
        / "data/digits/3"
        / sorted((pipeline_repo / "data/digits/3").iterdir())[0].name
    )
    pixels = np.asarray(Image.open(path).convert("L"))
    body, headers = multipart([(path.name, path.read_bytes())])
    by_file = json.loads(request(server, "POST", "/predict?top_k=10", body, headers)[2])
    status, _, raw = request(
        server,
        "POST",
        "/predict?top_k=10",
        json.dumps({"instances": [pixels.tolist()]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, raw
    by_json = json.loads(raw)["predictions"][0]
    assert by_json["top_k"] == by_file["predictions"][0]["top_k"]
    assert by_json["input"] == "instances[0]"


def test_predict_preprocesses_like_training(server, pipeline_repo, card, session):
    """A big RGB image: the server resizes and converts it exactly as mlproject.core.preprocess."""
    rgb = np.random.default_rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    spec = InputSpec.from_card(card)
    x = normalize(
        to_pixels(open_image(png(rgb)), spec.height, spec.width, spec.channels, spec.resize),
        spec.mean,
        spec.std,
    )[None]
    logits = session.run(["logits"], {"input": x})[0][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    body, headers = multipart([("big.png", png(rgb))])
    got = json.loads(request(server, "POST", "/predict", body, headers)[2])["predictions"][0]
    assert got["class"] == card["classes"][int(probs.argmax())]
    assert got["confidence"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert len(got["top_k"]) == 3  # TOP_K default


# --- bad input (every case is in test_server.py, in-process; here what only a socket shows) ---


def test_body_over_limit_without_content_length(server, card):
    """A chunked body has no Content-Length: the limit applies as the bytes stream in."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/v2/models/{card['name']}/infer",
            body=iter([b"[" + b"0.5," * 20_000] * 5 + [b"0]"]),
            encode_chunked=True,
            headers={"Transfer-Encoding": "chunked"},
        )
        resp = conn.getresponse()
        assert resp.status == 413 and "MAX_BODY_BYTES" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_triton_client_sees_errors(client, card):
    x = np.zeros((1, 1, 8, 9), dtype=np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match=r"inputs\[0\]\.shape"):
        client.infer(card["name"], [inp])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


# --- metrics, after all of the above -----------------------------------------------------------


def test_metrics_count_everything_and_no_5xx(server, card):
    status, headers, raw = request(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = raw.decode()
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
    infer_ok = 'mlserve_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"}'
    assert series[infer_ok] >= 4  # the Triton client's inferences above
    assert not [k for k in series if k.startswith("mlserve_requests_total") and 'status="5' in k]
    assert series['mlserve_request_duration_seconds_count{route="/predict"}'] >= 5
    assert series["mlserve_inference_duration_seconds_count"] >= 5
    assert series['mlserve_batch_size_count{api="predict"}'] >= 5
    predicted = sum(v for k, v in series.items() if k.startswith("mlserve_predictions_total"))
    assert predicted >= 270
    info = [k for k in series if k.startswith("mlserve_model_info")]
    assert len(info) == 1 and card["sha256"] in info[0] and f'name="{card["name"]}"' in info[0]
    assert "process_resident_memory_bytes" in series
    # ...and the server is still serving.
    assert json.loads(request(server, "GET", "/v2/health/ready")[2]) == {"ready": True}
