"""A naive inference server, for comparison only: eager PyTorch behind FastAPI.

What a first version usually looks like: a pydantic model validates the Open Inference Protocol
JSON request, a sync endpoint (FastAPI runs it in its thread pool) builds a tensor and calls the
trained `nn.Module` from outputs/model.pt, PyTorch with its default threads. Same route and
request body as the real server's /v2/models/{name}/infer, so one load generator drives both.

    python benchmarks/naive_torch_server.py --checkpoint outputs/model.pt --port 8001
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from mlproject.pipeline.train import load_checkpoint


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list


class InferRequest(BaseModel):
    inputs: list[Tensor]


def create_app(checkpoint: Path, name: str) -> FastAPI:
    model, _ = load_checkpoint(checkpoint)
    app = FastAPI(title="naive eager-PyTorch server")

    @app.get("/v2/health/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/v2/models/{model_name}/infer")
    def infer(model_name: str, request: InferRequest) -> dict:
        if model_name != name:
            raise HTTPException(404, f"unknown model {model_name}")
        tensor = request.inputs[0]
        x = torch.tensor(tensor.data, dtype=torch.float32).reshape(tensor.shape)
        with torch.no_grad():
            logits = model(x)
            probs = torch.softmax(logits, dim=1)
        return {
            "model_name": name,
            "outputs": [
                {
                    "name": "logits",
                    "datatype": "FP32",
                    "shape": list(logits.shape),
                    "data": logits.flatten().tolist(),
                },
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": list(probs.shape),
                    "data": probs.flatten().tolist(),
                },
            ],
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("outputs/model.pt"))
    parser.add_argument("--name", default="digits-smallcnn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.checkpoint, args.name),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
