"""Data larger than memory: prepared splits written in chunks (byte-stable, np.savez's bytes),
read by index, and training that streams them through DataLoader workers to the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlproject.kinds.images.prepare import prepare
from mlproject.pipeline.config import ConfigError, compose
from mlproject.pipeline.loader import InMemory, Streamed, open_split, streams
from mlproject.pipeline.splits import SplitReader, SplitWriter
from mlproject.pipeline.train import train

from conftest import DEMO_CONF

CONF = DEMO_CONF  # conf/ with the digits demo selected (a fork may default to its own)


def write_rgb_folder(root, classes=3, per_class=12, size=16, seed=0):
    """Class folders of random RGB PNGs, each class a different mean colour."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((size, size, 3), np.int64)
            base[..., c % 3] = 160
            pixels = np.clip(base + rng.integers(0, 96, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8), "RGB").save(folder / f"{i:03d}.png")
    return root


def rgb_cfg(data_root, *overrides):
    return compose(
        [
            f"data.root={data_root}",
            "data.image_size=[16,16]",
            "data.channels=3",
            "data.split.val=0.2",
            "data.split.test=0.2",
            *overrides,
        ],
        conf_dir=CONF,
    )


def test_chunked_writer_gives_np_savez_bytes_and_reader_reads_rows(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (23, 3, 4, 5), dtype=np.uint8)
    y = rng.integers(0, 4, 23)
    np.savez(tmp_path / "ref.npz", x=x, y=y)
    with SplitWriter(tmp_path / "out.npz", 23, (3, 4, 5)) as out:
        for start in range(0, 23, 7):
            out.write(x[start : start + 7], y[start : start + 7])
    assert (tmp_path / "out.npz").read_bytes() == (tmp_path / "ref.npz").read_bytes()
    reader = SplitReader(tmp_path / "out.npz")
    order = [22, 0, 5, 5, 13]
    np.testing.assert_array_equal(reader.read(order), x[order])
    np.testing.assert_array_equal(reader.labels, y)
    assert reader.nbytes == x.nbytes
    with pytest.raises(IndexError, match="row 23 of 23"):
        reader.read([23])


def test_writer_with_missing_rows_fails(tmp_path):
    with (
        pytest.raises(ValueError, match="wrote 2 of 3"),
        SplitWriter(tmp_path / "s.npz", 3, (1, 2, 2)) as out,
    ):
        out.write(np.zeros((2, 1, 2, 2), np.uint8), [0, 1])


def test_prepare_in_chunks_is_byte_stable_and_its_statistics_exact(tmp_path):
    cfg = rgb_cfg(write_rgb_folder(tmp_path / "data"))
    meta = prepare(cfg, out_dir=tmp_path / "a", chunk=5)
    prepare(cfg, out_dir=tmp_path / "b", chunk=1000)
    for name in ("train.npz", "val.npz", "test.npz", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with np.load(tmp_path / "a" / "train.npz") as npz:
        x = npz["x"].astype(np.float64) / 255.0
    np.testing.assert_allclose(meta["input"]["mean"], x.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(meta["input"]["std"], x.std(axis=(0, 2, 3)), atol=1e-6)


def test_in_memory_setting_and_budget_decide_streaming():
    cfg = compose([], conf_dir=CONF).data
    assert cfg.in_memory == "auto"
    assert not streams(cfg, 10 * 2**20)
    assert streams(compose(["data.memory_budget_mb=1"], conf_dir=CONF).data, 2 * 2**20)
    assert streams(compose(["data.in_memory=false"], conf_dir=CONF).data, 1)
    assert not streams(compose(["data.in_memory=true"], conf_dir=CONF).data, 2**40)
    with pytest.raises(ConfigError, match="data.in_memory"):
        streams(compose(["data.in_memory=sometimes"], conf_dir=CONF).data, 1)


@pytest.mark.slow  # trains twice: seconds
def test_streamed_training_matches_in_memory_bit_for_bit(tmp_path):
    data = write_rgb_folder(tmp_path / "data")
    base = ["train.epochs=2", "train.batch_size=8", "model.channels=[4]", "model.hidden=8"]
    cfg_mem = rgb_cfg(data, *base, "data.in_memory=true")
    cfg_disk = rgb_cfg(data, *base, "data.in_memory=false", "data.workers=2")
    prepare(cfg_mem, out_dir=tmp_path / "prepared")
    cpu = torch.device("cpu")
    assert isinstance(open_split(tmp_path / "prepared", "train", cfg_mem.data, cpu), InMemory)
    assert isinstance(open_split(tmp_path / "prepared", "train", cfg_disk.data, cpu), Streamed)

    logs: list[str] = []
    kwargs = {"prepared": tmp_path / "prepared", "live_dir": None}
    a = train(cfg_mem, checkpoint=tmp_path / "mem.pt", log=lambda _: None, **kwargs)
    b = train(cfg_disk, checkpoint=tmp_path / "disk.pt", log=logs.append, **kwargs)
    assert any("streamed from disk" in line for line in logs)
    assert a == b
    wa = torch.load(tmp_path / "mem.pt", weights_only=True)["model_state"]
    wb = torch.load(tmp_path / "disk.pt", weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
