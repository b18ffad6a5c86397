"""Configuration: params.yaml is the composition of conf/, and bad keys fail with their name."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mlproject.pipeline.config import (
    ConfigError,
    compose,
    instantiate_model,
    load_params,
    to_yaml,
    validate,
)

from conftest import ROOT

CONF = ROOT / "conf"


def test_params_yaml_is_the_composition_of_conf():
    committed = (ROOT / "params.yaml").read_text()
    assert committed == to_yaml(compose(conf_dir=CONF)), "run `make params` and commit params.yaml"


def test_committed_params_pass_the_schema():
    cfg = load_params(ROOT / "params.yaml")
    assert cfg.model._target_.endswith("SmallCNN")
    assert {
        "epochs",
        "lr",
        "batch_size",
        "seed",
        "optimizer",
        "scheduler",
        "early_stopping",
    } <= set(cfg.train)


@pytest.mark.parametrize(("group", "target"), [("cnn", "SmallCNN"), ("mlp", "MLP")])
def test_model_group_switches_by_name(group, target):
    cfg = compose([f"model={group}"], conf_dir=CONF)
    model = instantiate_model(cfg.model, in_channels=1, num_classes=10, image_size=[8, 8])
    assert type(model).__name__ == target


def test_experiment_preset_overrides_a_few_keys():
    cfg = compose(["+experiment=mlp_fast"], conf_dir=CONF)
    assert cfg.model._target_.endswith("MLP")
    assert cfg.train.epochs == 15
    assert cfg.train.scheduler.T_max == 15  # interpolations follow the override


def test_interpolations_are_resolved_like_dvc_does():
    cfg = compose(["train.lr=0.01"], conf_dir=CONF)
    assert cfg.train.optimizer.lr == 0.01


def test_unknown_override_key_is_rejected_by_hydra():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose(["train.lrr=0.1"], conf_dir=CONF)


def test_unknown_group_option_lists_the_choices():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="resnet"):
        compose(["model=resnet"], conf_dir=CONF)


def _cfg(**changes):
    cfg = compose(conf_dir=CONF)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("train.lrr", 0.1, "train.lrr"),
        ("train.epochs", "many", "train.epochs"),
        ("data.resize", "crop", "data.resize"),
        ("data.channels", 2, "data.channels"),
        ("data.image_size", [8], "data.image_size"),
        ("data.split.test", 0.9, "data.split"),
    ],
)
def test_bad_params_name_the_key(key, value, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        validate(_cfg(**{key: value}))


def test_missing_params_file_says_how_to_make_it(tmp_path):
    with pytest.raises(ConfigError, match="make params"):
        load_params(tmp_path / "params.yaml")


def test_model_keys_that_do_not_fit_the_class_are_named():
    cfg = _cfg(**{"model.widht": 3})
    with pytest.raises(ConfigError, match="SmallCNN"):
        instantiate_model(cfg.model, in_channels=1, num_classes=10, image_size=[8, 8])
