"""Images with a number to predict (data.task: regression, data.targets): the targets file is
checked both ways with named errors, and the pipeline learns a known target (brightness)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from mlproject.kinds.images.targets import discover_targets
from mlproject.pipeline.config import ConfigError, compose, validate
from mlproject.pipeline.data import DataError, png_bytes

from conftest import DEMO_CONF, ROOT, make_project, run

CONFIG = """\
# Images whose target is their brightness (the mean pixel, 0..1).
name: brightness
kind: images
task: regression
root: data/brightness
targets: targets.csv
extensions: [.png]
image_size: [8, 8]
channels: 1
resize: stretch
split: {val: 0.15, test: 0.15, seed: 42}
in_memory: auto
memory_budget_mb: 1024
workers: 0
"""


def write_images(root: Path, n: int = 200, seed: int = 0) -> np.ndarray:
    """n noisy 8x8 images of random brightness in root/{a,b}/, and root/targets.csv."""
    rng = np.random.default_rng(seed)
    values = []
    lines = ["file,brightness"]
    for i in range(n):
        level = rng.uniform(20, 235)
        pixels = np.clip(level + rng.normal(0, 20, (8, 8)), 0, 255).astype(np.uint8)
        rel = f"{'ab'[i % 2]}/{i:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(pixels))
        values.append(round(float(pixels.mean()) / 255, 6))
        lines.append(f"{rel},{values[-1]}")
    (root / "targets.csv").write_text("\n".join(lines) + "\n")
    return np.asarray(values)


def test_targets_are_read_per_image(tmp_path):
    values = write_images(tmp_path, n=6)
    found = discover_targets(tmp_path, "targets.csv", [".png"])
    assert found.name == "brightness" and found.values.dtype == np.float32
    assert [p.relative_to(tmp_path).as_posix() for p in found.files][:2] == [
        "a/0000.png",
        "a/0002.png",
    ]
    by_name = dict(zip((p.name for p in found.files), found.values.tolist(), strict=True))
    assert by_name["0001.png"] == pytest.approx(values[1])


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda root: (root / "targets.csv").unlink(), ["targets.csv: targets file not found"]),
        (
            lambda root: _edit(root, "a/0000.png,", "a/9999.png,"),
            ["row 2", "'a/9999.png'", "not an image under"],
        ),
        (
            lambda root: _set(root, "b/0001.png", "bright"),
            ["row 3", "column 'brightness'", "is not a number", "'b/0001.png'"],
        ),
        (lambda root: _drop_row(root, "b/0003.png"), ["0003.png: image without a target"]),
        (lambda root: _set(root, "a/0002.png", "nan"), ["row 4", "finite"]),
        (
            lambda root: (root / "a/notes.txt").write_text("x"),
            ["notes.txt: not an image file"],
        ),
    ],
    ids=["missing-file", "unknown-image", "text-value", "no-target", "nan", "stray-file"],
)
def test_a_bad_targets_file_is_named(tmp_path, change, words):
    write_images(tmp_path, n=6)
    change(tmp_path)
    with pytest.raises(DataError) as err:
        discover_targets(tmp_path, "targets.csv", [".png"])
    for word in words:
        assert word in str(err.value)


def _edit(root: Path, old: str, new: str) -> None:
    path = root / "targets.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _set(root: Path, rel: str, value: str) -> None:
    path = root / "targets.csv"
    lines = path.read_text().splitlines(True)
    path.write_text("".join(f"{rel},{value}\n" if x.startswith(f"{rel},") else x for x in lines))


def _drop_row(root: Path, rel: str) -> None:
    path = root / "targets.csv"
    path.write_text("".join(x for x in path.read_text().splitlines(True) if not x.startswith(rel)))


def test_the_config_needs_targets_for_regression_only(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = OmegaConf.create(OmegaConf.to_container(compose(conf_dir=DEMO_CONF)))
    validate(cfg)  # digits: no task, no targets
    data = OmegaConf.to_container(cfg.data)
    for patch, key in (
        ({"task": "ranking"}, "data.task"),
        ({"task": "regression"}, "data.targets"),
        ({"targets": "t.csv"}, "data.targets"),
    ):
        bad = OmegaConf.merge(cfg, {"data": {**data, **patch}})
        with pytest.raises(ConfigError, match=key):
            validate(bad)


@pytest.mark.slow  # dvc repro of a generated image folder (3 epochs of a small CNN)
def test_images_with_a_numeric_target_train_evaluate_and_export(tmp_path):
    repo = make_project(tmp_path / "repo", with_data=False)
    values = write_images(repo / "data/brightness", n=200)
    (repo / "conf/data/brightness.yaml").write_text(CONFIG)
    config = repo / "conf/config.yaml"
    text = config.read_text().replace("  - data: digits\n", "  - data: brightness\n")
    text = text.replace("  epochs: 40\n", "  epochs: 3\n").replace(
        "  batch_size: 64\n", "  batch_size: 16\n"
    )
    config.write_text(text)
    run([sys.executable, "-m", "mlproject.pipeline.config"], repo)  # make params
    run(["dvc", "repro"], repo, timeout=1200)

    meta = json.loads((repo / "outputs/prepared/meta.json").read_text())
    assert (meta["task"], meta["target"], meta["classes"]) == ("regression", "brightness", [])
    with np.load(repo / "outputs/prepared/train.npz") as npz:
        assert npz["y"].dtype == np.float32 and npz["x"].shape[1:] == (1, 8, 8)
        assert set(np.round(npz["y"], 5)) <= set(np.round(values.astype(np.float32), 5))
    metrics = json.loads((repo / "reports/eval/metrics.json").read_text())
    assert {"rmse", "mae", "r2"} <= set(metrics) and "accuracy" not in metrics
    assert metrics["r2"] > 0, metrics  # brightness is easy
    card = json.loads((repo / "models/model_card.json").read_text())
    assert card["task"] == "regression" and card["output"]["name"] == "prediction"

    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / "models/model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["prediction"]
    x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    (prediction,) = session.run(None, {session.get_inputs()[0].name: x})
    assert prediction.shape == (2, 1) and prediction.dtype == np.float32
    explained = json.loads((repo / "reports/explain/attributions.json").read_text())
    assert explained["target"] == "predicted value" and explained["samples"]
