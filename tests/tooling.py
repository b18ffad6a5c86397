"""Helpers shared by the tests (one copy each): a free loopback port, recorders that stand in for
`cml`/`gh` on PATH, a real Prometheus for the operations tests (alert rules, dashboard queries),
and for the inference server's tests a tiny ONNX model with its card, PNGs and multipart forms.
External tools are found with conftest.require_tool (skips here, fails when CI=true). Request
bodies and raw HTTP calls are in mlproject.serve.client (the benchmark uses them too)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import require_tool


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the one helper the server code uses too)."""
    from mlproject.serve.process import free_port as serve_free_port

    return serve_free_port()


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Poll `url` until it answers; RuntimeError with the server's log if `proc` exits first
    or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{url} did not answer:\n{log.read_text()}") from None
            time.sleep(0.2)


RECORDER = """#!{python}
# {tool} (test recorder): writes each call to $RECORD_DIR/{tool}-<ns>.json, answers as set up.
import json, os, pathlib, sys, time
argv = sys.argv[1:]
out = pathlib.Path(os.environ["RECORD_DIR"])
out.mkdir(parents=True, exist_ok=True)
call = {{"tool": {tool!r}, "argv": argv, "env_token": os.environ.get("REPO_TOKEN")}}
(out / f"{tool}-{{time.time_ns()}}.json").write_text(json.dumps(call))
fail = {fail!r}
if fail is True or (fail and argv[: len(fail)] == fail):
    sys.stderr.write({stderr!r})
    sys.exit(1)
sys.stdout.write({stdout!r})
"""


def write_recorder(
    bin_dir: Path,
    tool: str,
    *,
    stdout: str = "",
    stderr: str = "",
    fail: bool | list[str] = False,
) -> Path:
    """An executable `bin_dir/tool` that records its calls under $RECORD_DIR (read them with
    `recorded`) and prints `stdout`; it exits 1 with `stderr` when `fail` is True or a prefix of
    its arguments. Put bin_dir first on PATH to stand in for cml or gh: nothing reaches GitHub."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / tool
    script.write_text(
        RECORDER.format(python=sys.executable, tool=tool, stdout=stdout, stderr=stderr, fail=fail)
    )
    script.chmod(0o755)
    return script


def recorded(record_dir: Path, tool: str | None = None) -> list[dict]:
    """The calls the recorders wrote, oldest first: [{tool, argv, env_token}]."""
    files = sorted(record_dir.glob("*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    calls = [json.loads(p.read_text()) for p in files]
    return [c for c in calls if tool is None or c["tool"] == tool]


class PrometheusProcess:
    """A real Prometheus on a free loopback port scraping `targets` every second, with
    `rule_files` loaded: `with PrometheusProcess(tmp, ["127.0.0.1:8000"]) as prom: prom.query(q)`."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path] = ()):
        self.binary = require_tool("prometheus", "Debian: apt-get install prometheus")
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = "".join(f"  - {p}\n" for p in rule_files)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + "scrape_configs:\n  - job_name: mlserve\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: {targets!r}\n"
        )
        self.proc = None

    def __enter__(self) -> PrometheusProcess:
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>; the decoded JSON, errors included (HTTP 400/422 carry JSON)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def wait_for(self, query: str, timeout: float = 30.0) -> list:
        """Poll `query` until it returns samples; they, or [] at the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                result = self.api("query", query=query)
            except (OSError, ValueError):  # not up yet; a starting Prometheus answers 503 text
                continue
            if result.get("status") == "success" and result["data"]["result"]:
                return result["data"]["result"]
        return []

    def wait_for_rules(self, timeout: float = 20.0) -> list:
        """The rule groups once each rule has been evaluated at least once."""
        deadline = time.monotonic() + timeout
        groups = []
        while time.monotonic() < deadline:
            groups = self.api("rules")["data"]["groups"]
            if groups and all(r["health"] != "unknown" for g in groups for r in g["rules"]):
                break
            time.sleep(0.5)
        return groups


# --- the inference server ----------------------------------------------------------------------


def tiny_model(directory: Path, name: str = "tiny") -> tuple[Path, Path]:
    """A served model in milliseconds, no pipeline run: a linear classifier over 1x8x8 images
    (outputs `logits` and `probabilities`, as the export stage writes them) and its card.
    Returns (model.onnx, model_card.json)."""
    import hashlib

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
        ],
        [numpy_helper.from_array(weights, "weights")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto)
    blob = proto.SerializeToString()
    directory.mkdir(parents=True, exist_ok=True)
    model, card = directory / "model.onnx", directory / "model_card.json"
    model.write_bytes(blob)
    spec = {"height": 8, "width": 8, "channels": 1, "resize": "stretch"}
    card.write_text(
        json.dumps(
            {
                "name": name,
                "sha256": hashlib.sha256(blob).hexdigest(),
                "classes": [str(i) for i in range(10)],
                "input": {"name": "input", **spec, "mean": [0.3], "std": [0.4]},
                "output": {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
            }
        )
    )
    return model, card


def png(pixels) -> bytes:
    """PNG bytes of a uint8 array (H x W grayscale or H x W x C)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def multipart(files: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, dict]:
    """A multipart/form-data body carrying `files` as (file name, bytes); and its headers."""
    boundary = "testboundary7d1f"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename='
        f'"{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"
    }
