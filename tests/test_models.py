"""Model tests: shapes, the training step, determinism, checkpoints, export parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from omegaconf import OmegaConf

from mlproject.kinds.images.modules import Normalizer
from mlproject.pipeline.config import compose, instantiate_model
from mlproject.pipeline.data import write_digits
from mlproject.pipeline.export import ParityError, WithProbabilities, export, export_onnx
from mlproject.pipeline.models import MLP, SmallCNN
from mlproject.pipeline.prepare import prepare
from mlproject.pipeline.train import (
    EarlyStopping,
    load_checkpoint,
    train,
    train_one_epoch,
)

from conftest import DEMO_CONF

CONF = DEMO_CONF  # conf/ with the digits demo selected (a fork may default to its own)


@pytest.mark.parametrize("cls", [SmallCNN, MLP])
@pytest.mark.parametrize(("channels", "size"), [(1, (8, 8)), (3, (32, 24)), (1, (1, 1))])
def test_models_map_images_to_class_logits(cls, channels, size):
    model = cls(in_channels=channels, num_classes=7, image_size=size).eval()
    assert model(torch.zeros(5, channels, *size)).shape == (5, 7)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The demo data prepared in a temp folder, and a config that trains for a few epochs."""
    tmp = tmp_path_factory.mktemp("small")
    write_digits(tmp / "data")
    cfg = compose([f"data.root={tmp / 'data'}", "train.epochs=3"], conf_dir=CONF)
    prepare(cfg, out_dir=tmp / "prepared")
    return tmp, cfg


def test_prepare_records_classes_normalization_and_disjoint_files(small):
    tmp, _ = small
    meta = __import__("json").loads((tmp / "prepared/meta.json").read_text())
    assert meta["classes"] == [str(d) for d in range(10)]
    assert 0 < meta["input"]["mean"][0] < 1 and 0 < meta["input"]["std"][0] < 1
    files = [set(meta["files"][s]) for s in ("train", "val", "test")]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
    assert sum(len(f) for f in files) == 1797


@pytest.mark.slow  # a training epoch of 256 images: seconds
def test_one_training_epoch_lowers_the_loss():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8)
    y = (x.float().mean(dim=(1, 2, 3)) > 127.5).long()  # a learnable rule
    model = SmallCNN(1, 2, (8, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    norm = Normalizer([0.5], [0.25])
    gen = torch.Generator().manual_seed(0)
    first = train_one_epoch(model, norm, opt, scaler, x, y, 32, gen, torch.device("cpu"), False)
    for _ in range(4):
        last = train_one_epoch(model, norm, opt, scaler, x, y, 32, gen, torch.device("cpu"), False)
    assert last["loss"] < first["loss"] * 0.7


def test_early_stopping_waits_for_patience():
    stop = EarlyStopping("val/loss", "min", patience=2, min_delta=0.0)
    assert stop.improved({"val/loss": 1.0}) and not stop.should_stop
    assert not stop.improved({"val/loss": 1.1})
    assert not stop.should_stop
    assert not stop.improved({"val/loss": 1.0})
    assert stop.should_stop


@pytest.mark.slow  # trains twice: seconds
def test_training_is_deterministic_and_the_checkpoint_loads_weights_only(small):
    tmp, cfg = small
    logs: list[str] = []
    first = train(
        cfg, prepared=tmp / "prepared", checkpoint=tmp / "a.pt", live_dir=None, log=logs.append
    )
    second = train(
        cfg, prepared=tmp / "prepared", checkpoint=tmp / "b.pt", live_dir=None, log=lambda _: None
    )
    assert first == second
    assert any(line.startswith("epoch   1/3") for line in logs)
    a = torch.load(tmp / "a.pt", weights_only=True)
    b = torch.load(tmp / "b.pt", weights_only=True)
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    assert a["classes"] == [str(d) for d in range(10)]
    assert a["config"]["train"]["epochs"] == 3
    model, payload = load_checkpoint(tmp / "a.pt")
    assert isinstance(model, SmallCNN) and not model.training


@pytest.mark.slow  # exports with torch.onnx (dynamo): seconds each
def test_export_is_self_contained_dynamic_and_matches_pytorch(small, tmp_path):
    tmp, cfg = small
    train(
        cfg, prepared=tmp / "prepared", checkpoint=tmp / "m.pt", live_dir=None, log=lambda _: None
    )
    card = export(
        cfg,
        prepared=tmp / "prepared",
        checkpoint=tmp / "m.pt",
        onnx_path=tmp_path / "model.onnx",
        card_path=tmp_path / "card.json",
        metrics_path=tmp_path / "none.json",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "model.onnx"]  # no .data
    proto = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param and not dim.dim_value  # symbolic batch dimension
    assert card["export"]["parity"]["max_abs_diff"] <= 1e-5
    assert card["classes"] == [str(d) for d in range(10)]
    assert card["input"]["shape"] == [-1, 1, 8, 8]
    assert card["lineage"]["data"]["md5"].endswith(".dir")

    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    for batch in (1, 7):
        logits, probs = session.run(None, {"input": np.zeros((batch, 1, 8, 8), np.float32)})
        assert logits.shape == probs.shape == (batch, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow  # exports with torch.onnx (dynamo): seconds each
def test_export_fails_and_writes_nothing_when_parity_is_not_met(small, tmp_path):
    tmp, cfg = small
    train(
        cfg, prepared=tmp / "prepared", checkpoint=tmp / "p.pt", live_dir=None, log=lambda _: None
    )
    strict = OmegaConf.merge(cfg, {"export": {"parity_atol": 0.0}})
    with pytest.raises(ParityError, match="parity_atol"):
        export(
            strict,
            prepared=tmp / "prepared",
            checkpoint=tmp / "p.pt",
            onnx_path=tmp_path / "model.onnx",
            card_path=tmp_path / "card.json",
            metrics_path=tmp_path / "none.json",
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # exports with torch.onnx (dynamo): seconds each
def test_onnx_bytes_do_not_depend_on_the_torch_builds_local_version(tmp_path, monkeypatch):
    """GitHub's CPU runners install torch `2.14.1+cpu`, this machine `2.14.1+cu130`: the same
    weights must give the same file (the producer version is torch's public version)."""
    torch.manual_seed(0)
    model = WithProbabilities(SmallCNN(1, 10, (8, 8))).eval()
    public = torch.__version__.split("+")[0]
    blobs = {}
    for build in (f"{public}+cu130", f"{public}+cpu"):
        monkeypatch.setattr(torch, "__version__", build)
        export_onnx(model, torch.zeros(2, 1, 8, 8), tmp_path / f"{build}.onnx", opset=18)
        blobs[build] = (tmp_path / f"{build}.onnx").read_bytes()
    assert len(set(blobs.values())) == 1
    assert onnx.load_from_string(blobs[f"{public}+cpu"]).producer_version == public


def test_instantiate_model_passes_data_shape():
    cfg = compose(["model=mlp"], conf_dir=CONF)
    model = instantiate_model(cfg.model, in_channels=3, num_classes=4, image_size=[5, 6])
    assert model(torch.zeros(2, 3, 5, 6)).shape == (2, 4)
