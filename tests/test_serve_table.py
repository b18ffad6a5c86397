"""Serving a table model: raw rows through the Open Inference Protocol (one input per column,
JSON and the binary extension), /predict (JSON rows and CSV files), the model metadata, the
prediction log's table records, and a standard client (tritonclient) on a real socket.

The model is made in the fixture (tests/serve_table_model.py: per-column inputs, LabelEncoder,
one-hot, MatMul, Softmax) and every answer is checked against its NumPy reference, missing
values and unseen categories included.
"""

from __future__ import annotations

import json
import struct
import time
import warnings

import numpy as np
import pytest

from mlproject.serve.app import create_app
from mlproject.serve.model import ModelLoadError, load_model
from mlproject.serve.settings import Settings
from serve_table_model import CLASSES, ROWS, SPEC, build, reference

from tooling import multipart

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

NAME = "cars-table"
INFER = f"/v2/models/{NAME}/infer"
COLUMNS = [c["name"] for c in SPEC["columns"]]
NUMERIC = {c["name"] for c in SPEC["columns"] if c["type"] == "numeric"}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return build(tmp_path_factory.mktemp("table"), NAME)


@pytest.fixture(scope="module")
def client(model_files, tmp_path_factory):
    model, card = model_files
    log_dir = tmp_path_factory.mktemp("predlog")
    app = create_app(Settings(model=model, card=card, max_batch=16, prediction_log=log_dir))
    with TestClient(app) as test_client:
        test_client.log_dir = log_dir
        yield test_client


def tensors(rows: list[dict], order=None, flat: bool = False) -> list[dict]:
    """One Open Inference Protocol input per column (JSON data; None stays null)."""
    out = []
    for name in order or COLUMNS:
        values = [r[name] for r in rows]
        if name not in NUMERIC:
            values = [None if v is None else str(v) for v in values]
        out.append(
            {
                "name": name,
                "datatype": "FP32" if name in NUMERIC else "BYTES",
                "shape": [len(rows)] if flat else [len(rows), 1],
                "data": values if flat else [[v] for v in values],
            }
        )
    return out


def probabilities(response: dict) -> np.ndarray:
    out = {o["name"]: o for o in response["outputs"]}["probabilities"]
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


# --- model and metadata -------------------------------------------------------------------------


def test_metadata_lists_the_columns_with_their_datatypes(client):
    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["inputs"] == [
        {"name": n, "datatype": "FP32" if n in NUMERIC else "BYTES", "shape": [-1, 1]}
        for n in COLUMNS
    ]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]


def test_a_graph_that_lacks_a_column_of_the_card_is_named_at_load(model_files, tmp_path):
    model, card = model_files
    bad = json.loads(card.read_text())
    bad["input"]["columns"].append({"name": "Year", "type": "numeric", "datatype": "FP32"})
    (tmp_path / "card.json").write_text(json.dumps(bad))
    with pytest.raises(ModelLoadError, match="no input for column 'Year'"):
        load_model(model, tmp_path / "card.json")


# --- Open Inference Protocol --------------------------------------------------------------------


def test_infer_json_columns_in_any_order_with_nulls_and_unseen_categories(client):
    want = reference(ROWS)
    for order, flat in ((COLUMNS, False), (COLUMNS[::-1], True)):
        r = client.post(INFER, json={"inputs": tensors(ROWS, order, flat)})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(probabilities(r.json()), want, rtol=1e-5, atol=1e-6)


def test_infer_mlserver_pandas_convention_takes_the_checked_path_to_the_same_answer(client):
    """MLServer's table convention (parameters.content_type "pd", flat data under an [N, 1]
    shape) is not the usual request: the checked decoder reads it, to the same numbers."""
    inputs = [
        {**t, "data": [v for (v,) in t["data"]], "parameters": {"content_type": "pd"}}
        for t in tensors(ROWS)
    ]
    r = client.post(INFER, json={"inputs": inputs, "parameters": {"content_type": "pd"}})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(probabilities(r.json()), reference(ROWS), rtol=1e-5, atol=1e-6)


def test_infer_binary_extension_fp32_and_length_prefixed_bytes(client):
    header, blobs = [], []
    for name in COLUMNS[::-1]:
        values = [r[name] for r in ROWS]
        if name in NUMERIC:
            blob = np.array([np.nan if v is None else v for v in values], "<f4").tobytes()
        else:
            strings = [b"" if v is None else str(v).encode() for v in values]
            blob = b"".join(struct.pack("<I", len(s)) + s for s in strings)
        header.append(
            {
                "name": name,
                "datatype": "FP32" if name in NUMERIC else "BYTES",
                "shape": [len(ROWS), 1],
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    head = json.dumps({"inputs": header}).encode()
    r = client.post(
        INFER,
        content=head + b"".join(blobs),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(probabilities(r.json()), reference(ROWS), rtol=1e-5, atol=1e-6)


def _without(items: list[dict], name: str) -> list[dict]:
    return [t for t in items if t["name"] != name]


def _with(items: list[dict], name: str, **changes) -> list[dict]:
    return [{**t, **changes} if t["name"] == name else t for t in items]


ONE = tensors(ROWS[:1])
TWO = tensors(ROWS[:2])
BAD_INFER = {
    "missing column": (_without(ONE, "Maker"), ["missing column", "Maker"]),
    "unknown column": (ONE + [{**ONE[0], "name": "Colour"}], ["unknown column", "Colour"]),
    "given twice": (ONE + [ONE[0]], ["Horsepower", "given twice"]),
    "numeric as BYTES": (_with(ONE, "Horsepower", datatype="BYTES"), ["Horsepower", "FP32"]),
    "category as FP32": (_with(ONE, "Maker", datatype="FP32"), ["Maker", "BYTES"]),
    "text in FP32 data": (_with(ONE, "Weight_in_lbs", data=[["heavy"]]), ["Weight_in_lbs"]),
    "boolean in FP32 data": (_with(ONE, "Horsepower", data=[[True]]), ["Horsepower"]),
    "number in BYTES data": (_with(ONE, "Maker", data=[[3]]), ["Maker", "strings"]),
    "batch sizes differ": (ONE[:2] + TWO[2:], ["rows", "Weight_in_lbs", "Horsepower"]),
    "shape [1, 2]": (_with(ONE, "Horsepower", shape=[1, 2]), ["Horsepower", "shape"]),
    "values and shape differ": (_with(ONE, "Horsepower", data=[1.0, 2.0]), ["Horsepower"]),
    "beyond FP32": (_with(ONE, "Horsepower", data=[[1e39]]), ["Horsepower", "FP32"]),
    "batch over MAX_BATCH": (tensors(ROWS * 5), ["MAX_BATCH"]),
}


@pytest.mark.parametrize("case", list(BAD_INFER), ids=list(BAD_INFER))
def test_infer_bad_input_gets_a_400_naming_the_column(client, case):
    inputs, words = BAD_INFER[case]
    r = client.post(INFER, json={"inputs": inputs})
    assert r.status_code == 400, r.text
    for word in words:
        assert word in r.json()["error"], (word, r.json())


def test_infer_json_nan_literal_is_a_missing_number_infinity_is_not(client):
    """tritonclient writes np.nan as NaN in JSON mode (JSON has no such value): a table
    model reads it as missing, as null; Infinity stays an error naming the column."""
    body = json.dumps({"inputs": tensors(ROWS[1:2])}).replace("null", "NaN", 1)
    r = client.post(INFER, content=body.encode())
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(probabilities(r.json()), reference(ROWS[1:2]), rtol=1e-5)
    r = client.post(INFER, content=body.replace("NaN", "Infinity").encode())
    assert r.status_code == 400 and "Horsepower" in r.json()["error"], r.text


def test_infer_bad_binary_bytes_are_named(client):
    blob = struct.pack("<I", 10) + b"ford"  # declares 10 bytes, has 4
    inputs = _with(ONE, "Maker", parameters={"binary_data_size": len(blob)})
    inputs = [
        {k: v for k, v in t.items() if not (t["name"] == "Maker" and k == "data")} for t in inputs
    ]
    head = json.dumps({"inputs": inputs}).encode()
    r = client.post(
        INFER, content=head + blob, headers={"Inference-Header-Content-Length": str(len(head))}
    )
    assert r.status_code == 400 and "Maker" in r.json()["error"], r.text


# --- /predict -----------------------------------------------------------------------------------


def test_predict_json_rows_answer_per_row(client):
    r = client.post("/predict?top_k=2", json={"rows": ROWS})
    assert r.status_code == 200, r.text
    want = reference(ROWS)
    got = r.json()["predictions"]
    assert [p["input"] for p in got] == [f"rows[{i}]" for i in range(len(ROWS))]
    for p, w in zip(got, want, strict=True):
        assert p["class"] == CLASSES[int(w.argmax())]
        assert p["confidence"] == pytest.approx(w.max(), abs=1e-5)
        assert len(p["top_k"]) == 2 and p["top_k"][0]["class"] == p["class"]


def _csv(rows: list[dict], columns=None, extra: str = "") -> bytes:
    columns = columns or COLUMNS
    lines = [",".join(columns)]
    for r in rows:
        lines.append(",".join("" if r[c] is None else str(r[c]) for c in columns))
    return ("\n".join(lines) + "\n" + extra).encode()


def test_predict_csv_upload_equals_json_rows(client):
    # Columns in another order, the target column present (ignored).
    columns = ["Origin", *COLUMNS[::-1]]
    rows = [{**r, "Origin": "USA"} for r in ROWS]
    body, headers = multipart([("cars.csv", _csv(rows, columns))])
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = client.post("/predict", json={"rows": ROWS}).json()["predictions"]
    assert [p["input"] for p in got] == [f"files[0] (cars.csv):row {k}" for k in (1, 2, 3, 4)]
    assert [(p["class"], p["confidence"]) for p in got] == [
        (p["class"], p["confidence"]) for p in want
    ]


BAD_ROWS = {
    "missing column": ({"rows": [{k: v for k, v in ROWS[0].items() if k != "Maker"}]}, "Maker"),
    "unknown column": ({"rows": [{**ROWS[0], "Colour": "red"}]}, "Colour"),
    "text as a number": ({"rows": [{**ROWS[0], "Horsepower": "fast"}]}, "rows[0].Horsepower"),
    "a list as a category": ({"rows": [{**ROWS[0], "Maker": ["vw"]}]}, "rows[0].Maker"),
    "no rows": ({"rows": []}, "rows"),
    "not rows": ({"instances": [[1]]}, "rows"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS), ids=list(BAD_ROWS))
def test_predict_bad_rows_get_a_400_naming_row_and_column(client, case):
    body, word = BAD_ROWS[case]
    r = client.post("/predict", json=body)
    assert r.status_code == 400, r.text
    assert word in r.json()["error"]


def test_predict_bad_csv_is_named_by_file_row_and_column(client):
    for data, words in (
        (_csv(ROWS, extra="130,4,heavy,ford\n"), ["row 5", "Weight_in_lbs", "heavy"]),
        (_csv(ROWS, COLUMNS[:3]), ["missing column", "Maker"]),
        (b"Horsepower,Horsepower\n1,2\n", ["Horsepower", "twice"]),
        (_csv([{**r, "Colour": "red"} for r in ROWS], [*COLUMNS, "Colour"]), ["Colour"]),
        (b"", ["empty"]),
    ):
        body, headers = multipart([("bad.csv", data)])
        r = client.post("/predict", content=body, headers=headers)
        assert r.status_code == 400, r.text
        for word in words:
            assert word in r.json()["error"], (word, r.json())


# --- prediction log -----------------------------------------------------------------------------


def test_prediction_log_records_the_raw_row(client):
    # Weights no other test sends: this test's records, whatever ran before.
    rows = [{**r, "Weight_in_lbs": r["Weight_in_lbs"] + 0.5} for r in ROWS[1:4]]
    client.post(INFER, json={"inputs": tensors(rows[:1])})
    client.post("/predict", json={"rows": rows[1:]})
    path = client.log_dir / "predictions.jsonl"
    weights = [r["Weight_in_lbs"] for r in rows]
    deadline, mine = time.monotonic() + 20, {}
    while time.monotonic() < deadline and len(mine) < 3:
        time.sleep(0.1)
        records = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        mine = {r["features"]["Weight_in_lbs"]: r for r in records}
        mine = {w: mine[w] for w in weights if w in mine}
    assert [mine[w]["route"] for w in weights] == ["infer", "predict", "predict"]
    assert mine[weights[0]]["features"] == {
        "Horsepower": None,
        "Cylinders": "4",
        "Weight_in_lbs": 2046.5,
        "Maker": "vw",
    }
    assert mine[weights[1]]["features"]["Cylinders"] == "7"  # unseen, logged as sent
    assert mine[weights[2]]["features"]["Maker"] is None
    for w, want in zip(weights, reference(rows), strict=True):
        assert mine[w]["predicted"] == CLASSES[int(want.argmax())]
        assert mine[w]["confidence"] == pytest.approx(want.max(), rel=1e-4)
        assert mine[w]["model"] == NAME


# --- a standard client on a real socket ---------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_sends_one_input_per_column(model_files, binary):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from mlproject.serve.process import ServerProcess

    model, card = model_files
    with ServerProcess(model, card) as server:
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        meta = client.get_model_metadata(NAME)
        assert [i["name"] for i in meta["inputs"]] == COLUMNS
        inputs = []
        for name in COLUMNS[::-1]:
            values = [r[name] for r in ROWS]
            if name in NUMERIC:
                arr = np.array([[np.nan if v is None else v] for v in values], np.float32)
                inp = triton.InferInput(name, list(arr.shape), "FP32")
            else:
                arr = np.array([["" if v is None else str(v)] for v in values], dtype=object)
                inp = triton.InferInput(name, list(arr.shape), "BYTES")
            inp.set_data_from_numpy(arr, binary_data=binary)
            inputs.append(inp)
        out = triton.InferRequestedOutput("probabilities", binary_data=binary)
        result = client.infer(NAME, inputs, outputs=[out])
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), reference(ROWS), rtol=1e-5, atol=1e-6
        )
        with pytest.raises(InferenceServerException, match="Maker"):
            client.infer(NAME, inputs[1:])  # Maker left out


def test_serving_a_table_imports_no_training_stack(model_files):
    """The server image has no PyTorch, pandas or pyarrow: a table model is served without."""
    import subprocess
    import sys

    model, card = model_files
    code = f"""
import sys
from mlproject.serve.app import create_app
from mlproject.serve.settings import Settings
app = create_app(Settings(model={str(model)!r}, card={str(card)!r}))
assert app.state.server.model.name
bad = sorted(m for m in sys.modules if m.split('.')[0] in {{'torch', 'hydra', 'dvc',
             'omegaconf', 'sklearn', 'pandas', 'pyarrow'}})
print('LOADED', bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


def test_rows_chunk_round_trips_and_rejects_damage():
    import io

    from mlproject.serve.predlog import Rows, encode_rows_chunk, read_chunk

    ts, routes = np.array([1.5, 2.5]), np.array([0, 1], dtype=np.uint8)
    rows = Rows(["Horsepower", "Maker"], [[130.0, None], ["ford", None]])
    scores = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], dtype=np.float32)
    blob = b"".join(bytes(memoryview(b)) for b in encode_rows_chunk(ts, routes, rows, scores))
    stream = io.BytesIO(blob + blob)
    for _ in range(2):
        got = read_chunk(stream)
        np.testing.assert_array_equal(got[0], ts)
        np.testing.assert_array_equal(got[1], routes)
        assert got[2] == rows
        np.testing.assert_array_equal(got[3], scores)
    assert read_chunk(stream) is None
    with pytest.raises(ValueError, match="truncated chunk"):
        read_chunk(io.BytesIO(blob[:-1]))


@pytest.mark.slow
def test_openapi_fuzz_of_a_table_server_finds_no_server_error(model_files, tmp_path):
    """schemathesis against the documented routes of a table model's server (the /predict body
    is the table kind's): no 5xx, every answer as documented, invalid data rejected."""
    import subprocess
    import sys
    from pathlib import Path

    from mlproject.serve.client import count_5xx
    from mlproject.serve.process import ServerProcess

    checks = (
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,negative_data_rejection"
    )
    with ServerProcess(*model_files) as server:
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                checks,
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                "--generation-database",
                "none",
                "--request-timeout",
                "10",
                "--no-color",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
        assert count_5xx(server.url) == 0
