"""Augmentation from conf/augment/: seeded and deterministic, training split only."""

from __future__ import annotations

import pytest
import torch

from mlproject.pipeline.augment import build_augment
from mlproject.pipeline.config import ConfigError, compose

from conftest import DEMO_CONF

CONF = DEMO_CONF  # conf/ with the digits demo selected (a fork may default to its own)


def batch(seed=0, channels=3):
    return torch.randint(
        0, 256, (6, channels, 20, 20), generator=torch.Generator().manual_seed(seed)
    ).to(torch.uint8)


def test_none_is_the_default_and_changes_nothing():
    cfg = compose([], conf_dir=CONF)
    assert cfg.augment.name == "none"
    assert build_augment(cfg.augment, [8, 8], 1, seed=0) is None


def test_standard_is_seeded_per_image_and_leaves_global_rng_alone():
    cfg = compose(["augment=standard"], conf_dir=CONF).augment
    x = batch()
    first, second = build_augment(cfg, [20, 20], 3, seed=7), build_augment(cfg, [20, 20], 3, seed=7)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = first(x)
    assert torch.equal(torch.rand(3), before)  # the global generator is untouched
    b = second(x)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)  # same seed, same augmented batch
    assert not torch.equal(a, x)
    assert not torch.equal(first(x), a)  # the next batch draws anew
    other = build_augment(cfg, [20, 20], 3, seed=8)(x)
    assert not torch.equal(other, a)
    same = x[:1].expand(6, -1, -1, -1).clone()  # one image six times: six different draws
    out = build_augment(cfg, [20, 20], 3, seed=7)(same)
    assert len({bytes(img.numpy()) for img in out}) > 1


def test_bad_augment_settings_name_the_key():
    cfg = compose(["augment=standard"], conf_dir=CONF).augment
    with pytest.raises(ConfigError, match="augment.color_jitter: saturation and hue"):
        build_augment(cfg, [20, 20], 1, seed=0)
    bad = compose(["augment=standard", "+augment.rotate=10"], conf_dir=CONF).augment
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rotate'\]"):
        build_augment(bad, [20, 20], 3, seed=0)


def test_training_augments_the_training_split_only(tmp_path):
    from mlproject.pipeline.prepare import prepare
    from mlproject.pipeline.train import train
    from test_streaming import rgb_cfg, write_rgb_folder

    data = write_rgb_folder(tmp_path / "data")
    base = ["train.epochs=1", "train.batch_size=8", "model.channels=[4]", "model.hidden=8"]
    prepare(rgb_cfg(data, *base), out_dir=tmp_path / "prepared")
    runs = {}
    for name, extra in {
        "plain": [],
        "aug": ["augment=standard"],
        "aug2": ["augment=standard"],
    }.items():
        runs[name] = train(
            rgb_cfg(data, *base, *extra),
            prepared=tmp_path / "prepared",
            checkpoint=tmp_path / f"{name}.pt",
            live_dir=None,
            log=lambda _: None,
        )
    assert runs["aug"] == runs["aug2"]  # seeded: the same run twice
    assert runs["aug"]["train/loss"] != runs["plain"]["train/loss"]
