"""The table server a user would write by hand, for comparison only: Starlette + orjson +
onnxruntime, for a model with one input per column (FP32 numbers, strings for categories).

The table twin of benchmarks/peer_server.py: it parses the Open Inference Protocol JSON request,
builds one array per input (float32, or an object array of strings for BYTES), runs the ONNX
model and answers in /v2/models/{name}/infer's JSON shape, and does nothing else: no validation
(a bad request is a 500 or a wrong answer; a null is NaN for a number and breaks a string), no
metrics, no logging, no batching, no binary extension. Session and uvicorn are set up as in
peer_server.py, so the ratio measures what /infer does beyond the minimum.

    python benchmarks/peer_table_server.py --model M.onnx --card model_card.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DTYPES = {"tensor(float)": np.float32, "tensor(string)": object}


def create_app(model: Path, card: Path) -> Starlette:
    name = json.loads(card.read_text())["name"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    dtypes = {i.name: DTYPES[i.type] for i in session.get_inputs()}
    output_names = [o.name for o in session.get_outputs()]

    async def infer(request: Request) -> Response:
        tensors = orjson.loads(await request.body())["inputs"]
        feed = {
            t["name"]: np.asarray(t["data"], dtype=dtypes[t["name"]]).reshape(t["shape"])
            for t in tensors
        }
        results = session.run(output_names, feed)
        body = {
            "model_name": name,
            "outputs": [
                {"name": n, "datatype": "FP32", "shape": r.shape, "data": r.reshape(-1)}
                for n, r in zip(output_names, results, strict=True)
            ],
        }
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    async def ready(request: Request) -> Response:
        return Response(b'{"ready": true}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--card", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.model, args.card),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
