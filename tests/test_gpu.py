"""GPU tests: training on CUDA with mixed precision, and exporting what it trained.

Skipped without CUDA (see conftest.py), except in the GPU job: `make ci-test-gpu` sets
REQUIRE_GPU=1 (tests/gpu_required.py), and there no CUDA, a skip or no gpu test fails the job.
"""

from __future__ import annotations

import pytest
import torch

from mlproject.pipeline.config import compose
from mlproject.pipeline.data import write_digits
from mlproject.pipeline.export import export
from mlproject.pipeline.prepare import prepare
from mlproject.pipeline.train import autocast, load_checkpoint, select_device, train

from conftest import DEMO_CONF

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    write_digits(tmp / "data")
    cfg = compose(
        [f"data.root={tmp / 'data'}", "train.epochs=5", "train.device=auto"], conf_dir=DEMO_CONF
    )
    prepare(cfg, out_dir=tmp / "prepared")
    return tmp, cfg


def test_auto_device_is_cuda_and_autocast_uses_half_precision():
    device = select_device("auto")
    assert device.type == "cuda"
    with autocast(device, enabled=True):
        y = torch.nn.Linear(4, 4).to(device)(torch.ones(2, 4, device=device))
    assert y.dtype in (torch.float16, torch.bfloat16)


def test_training_with_mixed_precision_on_cuda_learns_and_exports(prepared, tmp_path):
    tmp, cfg = prepared
    logs: list[str] = []
    metrics = train(
        cfg, prepared=tmp / "prepared", checkpoint=tmp_path / "m.pt", live_dir=None, log=logs.append
    )
    assert "on cuda" in logs[0] and "amp=on" in logs[0]
    assert metrics["val/accuracy"] > 0.9
    model, _ = load_checkpoint(tmp_path / "m.pt", device="cpu")  # portable checkpoint
    assert next(model.parameters()).device.type == "cpu"
    card = export(
        cfg,
        prepared=tmp / "prepared",
        checkpoint=tmp_path / "m.pt",
        onnx_path=tmp_path / "model.onnx",
        card_path=tmp_path / "card.json",
        metrics_path=tmp_path / "none.json",
    )
    assert card["export"]["parity"]["max_abs_diff"] <= 1e-5
