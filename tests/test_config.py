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

from conftest import DEMO_CONF, ENV, ROOT

CONF = DEMO_CONF  # conf/ with the digits demo selected (a fork may default to its own)


def test_params_yaml_is_the_composition_of_conf():
    committed = (ROOT / "params.yaml").read_text()
    assert committed == to_yaml(compose(conf_dir=ROOT / "conf")), "run `make params` and commit it"


def test_committed_params_pass_the_schema():
    from hydra.utils import get_class

    cfg = load_params(ROOT / "params.yaml")
    assert isinstance(get_class(cfg.model._target_), type)  # the project's model, whichever
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


# --------------------------------------------------------------- make params checks what it writes


@pytest.fixture
def conf_copy(tmp_path, monkeypatch):
    """A project folder holding a copy of conf/ and a params.yaml, as the working directory."""
    import shutil

    shutil.copytree(CONF, tmp_path / "conf")
    (tmp_path / "params.yaml").write_text("# the params.yaml before make params\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


# (file under conf/, text, replacement, words the one-line error must contain)
BAD_CONF = {
    "broken-interpolation": (
        "config.yaml",
        "\n  lr: 0.003\n",
        "\n  learning_rate: 0.003\n",
        ["conf/config.yaml", "train.optimizer.lr", "${train.lr}", "does not resolve"],
    ),
    "unknown-key": (
        "config.yaml",
        "\n  batch_size: 64\n",
        "\n  batchsize: 64\n",
        ["conf/config.yaml", "train.batchsize", "batch_size", "make params"],
    ),
    "wrong-type": (
        "config.yaml",
        "\n  epochs: 40\n",
        "\n  epochs: many\n",
        ["conf/config.yaml", "train.epochs", "'many'"],
    ),
    "bad-choice-in-a-group-file": (
        "data/digits.yaml",
        "\nresize: stretch",
        "\nresize: crop",
        ["conf/data/digits.yaml", "data.resize", "'crop'", "pad"],
    ),
    "broken-interpolation-in-a-group-file": (
        "model/mlp.yaml",
        "\n_target_:",
        "\nwidth: ${model.nothing}\n_target_:",
        ["conf/model/mlp.yaml", "model.width", "${model.nothing}"],
    ),
}


@pytest.mark.parametrize("case", BAD_CONF)
def test_make_params_refuses_a_bad_conf_in_one_line_and_writes_nothing(conf_copy, capsys, case):
    from mlproject.pipeline.config import main

    rel, old, new, words = BAD_CONF[case]
    _edit(conf_copy / "conf" / rel, old, new)
    group, option = rel.removesuffix(".yaml").split("/") if "/" in rel else (None, None)
    overrides = [f"{group}={option}"] if group else []  # the group file with the mistake
    assert main(overrides) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err and not out
    assert (conf_copy / "params.yaml").read_text() == "# the params.yaml before make params\n"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["model=resnet"], ["conf/", "model/resnet", "cnn", "mlp"]),
        (["train.lrr=0.1"], ["train.lrr"]),
    ],
)
def test_a_bad_override_is_one_line_too(conf_copy, capsys, overrides, words):
    from mlproject.pipeline.config import main

    assert main(overrides) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Search path" not in err and all(w in err for w in words), err


def test_make_params_writes_the_composition_and_check_agrees(conf_copy, capsys):
    from mlproject.pipeline.config import main

    assert main([]) == 0
    assert (conf_copy / "params.yaml").read_text() == to_yaml(compose(conf_dir=CONF))
    assert main(["--check"]) == 0


def test_the_debug_variable_shows_the_traceback(conf_copy):
    """The command as `make params` runs it: one line; with MLPROJECT_DEBUG=1 the traceback too."""
    import subprocess
    import sys

    _edit(conf_copy / "conf/config.yaml", "\n  lr: 0.003\n", "\n  learning_rate: 0.003\n")
    cmd = [sys.executable, "-m", "mlproject.pipeline.config"]
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=conf_copy)
    assert plain.returncode == 1 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    debug = subprocess.run(
        cmd, capture_output=True, text=True, cwd=conf_copy, env={**ENV, "MLPROJECT_DEBUG": "1"}
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "InterpolationKeyError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
    assert (conf_copy / "params.yaml").read_text() == "# the params.yaml before make params\n"


# ----------------------------------------------------------------- nothing is staged for the user


def test_dvc_stages_nothing_the_user_did_not_ask_for(tmp_path):
    """Issue 19: with `core.autostage` on, `dvc repro` put dvc.lock in the index, and it went
    into an unrelated commit. With this project's .dvc/config, a real `dvc repro` leaves the
    index alone (tests/test_fresh_clone.py checks `make repro` end to end)."""
    import shutil

    from conftest import run

    (tmp_path / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc/config", tmp_path / ".dvc/config")
    (tmp_path / ".dvc/.gitignore").write_text("/config.local\n/tmp\n/cache\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  hello:\n    cmd: echo hello > out.txt\n    outs: [out.txt]\n"
    )
    run(["git", "init", "-q"], tmp_path)
    run("git add -A && git commit -qm project", tmp_path)
    result = run(["dvc", "repro"], tmp_path)
    assert (tmp_path / "dvc.lock").is_file(), result.stdout
    assert run(["git", "diff", "--cached", "--name-only"], tmp_path).stdout == ""
    assert "git add" in result.stdout  # DVC says what to commit; the user decides
