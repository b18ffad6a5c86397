"""Pretrained backbones: `model=timm` loads a local weights file, explains the offline case, holds
the backbone still for train.freeze_backbone_epochs, and a fork of 64x64 RGB photos trains,
exports with parity and serves (a real server on loopback). No network: pretrained=false or a
weights file saved here."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from omegaconf import OmegaConf

from mlproject.pipeline.backbones import TimmClassifier
from mlproject.pipeline.config import ConfigError, compose, instantiate_model
from mlproject.pipeline.export import export
from mlproject.pipeline.prepare import prepare
from mlproject.pipeline.train import train
from mlproject.serve.process import ServerProcess
from test_serve import multipart, png, request
from test_streaming import write_rgb_folder

from conftest import DEMO_CONF, ENV, ROOT

CONF = DEMO_CONF  # conf/ with the digits demo selected (a fork may default to its own)


def test_local_weights_file_loads_and_the_classifier_fits_the_classes(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("resnet18", pretrained=False)  # 1000 classes, as on the hub
    save_file(source.state_dict(), tmp_path / "resnet18.safetensors")
    cfg = compose(
        ["model=timm", "model.name=resnet18", f"model.weights={tmp_path / 'resnet18.safetensors'}"],
        conf_dir=CONF,
    )
    model = instantiate_model(cfg.model, in_channels=3, num_classes=4, image_size=[64, 64])
    assert isinstance(model, TimmClassifier)
    assert torch.equal(model.net.conv1.weight, source.conv1.weight)
    assert torch.equal(model.net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.net.get_classifier().weight.shape == (4, 512)

    missing = OmegaConf.merge(cfg.model, {"weights": str(tmp_path / "nope.pt")})
    with pytest.raises(ConfigError, match=r"model.weights: .*nope.pt: no such file"):
        instantiate_model(missing, in_channels=3, num_classes=4, image_size=[64, 64])
    unknown = OmegaConf.merge(cfg.model, {"name": "resnet_does_not_exist", "weights": None})
    with pytest.raises(ConfigError, match="model.name: 'resnet_does_not_exist'"):
        instantiate_model(unknown, in_channels=3, num_classes=4, image_size=[64, 64])


@pytest.mark.slow  # imports timm and tries its hub: ~10 s
def test_offline_hub_error_says_how_to_use_a_local_file(tmp_path):
    code = (
        "from mlproject.pipeline.config import compose, instantiate_model, ConfigError\n"
        f"cfg = compose(['model=timm', 'model.name=resnet10t'], conf_dir={str(CONF)!r})\n"
        "try:\n"
        "    instantiate_model(cfg.model, in_channels=3, num_classes=2, image_size=[32, 32])\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "model.pretrained: cannot fetch the weights of 'resnet10t'" in out.stdout
    assert "model.weights=<path" in out.stdout


@pytest.mark.slow
def test_rgb_photo_fork_with_resnet18_trains_exports_and_serves(tmp_path, monkeypatch):
    data = write_rgb_folder(tmp_path / "data", classes=2, per_class=10, size=64)
    cfg = compose(
        [
            f"data.root={data}",
            "data.image_size=[64,64]",
            "data.channels=3",
            "data.split.val=0.2",
            "data.split.test=0.2",
            "model=timm",
            "model.name=resnet18",
            "model.pretrained=false",
            "augment=standard",
            "train.epochs=1",
            "train.batch_size=8",
            "train.freeze_backbone_epochs=1",
        ],
        conf_dir=CONF,
    )
    prepare(cfg, out_dir=tmp_path / "prepared")
    kwargs = {"prepared": tmp_path / "prepared", "live_dir": None, "log": lambda _: None}
    train(cfg, checkpoint=tmp_path / "model.pt", **kwargs)

    # The backbone stayed as initialized (train seeds before building it); the classifier learnt.
    torch.manual_seed(int(cfg.train.seed))
    initial = instantiate_model(cfg.model, in_channels=3, num_classes=2, image_size=[64, 64])
    trained = torch.load(tmp_path / "model.pt", weights_only=True)["model_state"]
    assert torch.equal(trained["net.conv1.weight"], initial.net.conv1.weight)
    assert torch.equal(trained["net.layer4.1.conv2.weight"], initial.net.layer4[1].conv2.weight)
    assert not torch.equal(trained["net.fc.weight"], initial.net.fc.weight)

    monkeypatch.chdir(ROOT)  # the card's lineage reads data.dvc and git here
    card = export(
        cfg,
        prepared=tmp_path / "prepared",
        checkpoint=tmp_path / "model.pt",
        onnx_path=tmp_path / "model.onnx",
        card_path=tmp_path / "card.json",
        metrics_path=tmp_path / "none.json",
    )
    assert card["export"]["parity"]["max_abs_diff"] <= cfg.export.parity_atol
    assert card["input"]["shape"] == [-1, 3, 64, 64]

    image = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    with ServerProcess(
        tmp_path / "model.onnx", tmp_path / "card.json", cwd=tmp_path, startup_timeout=180
    ) as server:
        body, headers = multipart([("photo.png", png(image))])
        status, _, raw = request(server, "POST", "/predict?top_k=2", body, headers)
    assert status == 200, raw
    result = json.loads(raw)
    assert result["model"] == card["name"]
    item = result["predictions"][0]
    assert item["class"] in card["classes"] and len(item["top_k"]) == 2
    assert session.get_inputs()[0].shape[1:] == [3, 64, 64]
