"""The server a user would write by hand, for comparison only: Starlette + orjson + onnxruntime.

It parses the Open Inference Protocol JSON request, runs the ONNX model and answers in the same
JSON shape as /v2/models/{name}/infer, and does nothing else: no validation (a bad request is a
500 or a wrong answer), no metrics, no logging, no batching, no binary extension. The onnxruntime
session is set up as the real server's (one intra-op thread, no spinning), uvicorn as `make serve`
runs it (httptools and uvloop when installed, no access log), so the benchmark's ratio measures
what /infer does beyond the minimum, not a different runtime.

    python benchmarks/peer_server.py --model models/model.onnx --card models/model_card.json
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


def create_app(model: Path, card: Path) -> Starlette:
    name = json.loads(card.read_text())["name"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    async def infer(request: Request) -> Response:
        tensor = orjson.loads(await request.body())["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        results = session.run(output_names, {input_name: x})
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
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--card", type=Path, default=Path("models/model_card.json"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
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
