"""The one place configuration is read.

`conf/` (Hydra) is the source; `params.yaml` is its committed composition, which the DVC stages
read. Every key is checked against the schema below so that a typo fails loudly, naming the key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .. import kinds
from ..core.cli import entry_point
from ..core.errors import ProjectError

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"


class ConfigError(ProjectError, ValueError):
    """A configuration value or key is wrong; the message says which and how to fix it, and
    `key` is the dotted key when there is one."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


@dataclass
class EarlyStoppingSchema:
    monitor: str = "val/loss"
    mode: str = "min"
    patience: int = 8
    min_delta: float = 0.0


@dataclass
class TrainSchema:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.003
    seed: int = 42
    device: str = "auto"
    amp: bool = True
    threads: int = 1
    fast: bool = False
    freeze_backbone_epochs: int = 0
    # The loss (mlproject.tasks): auto = cross_entropy for a classifier, mse for regression;
    # regression also takes mae or huber.
    loss: str = "auto"
    optimizer: Any = None
    scheduler: Any = None
    early_stopping: EarlyStoppingSchema = field(default_factory=EarlyStoppingSchema)


@dataclass
class ExportSchema:
    opset: int = 18
    parity_atol: float = 1e-5


# Sections with a fixed schema. Other top-level sections (model: any `_target_` signature;
# sections added by later stages) are checked where they are used.
# `data` has its kind's schema (mlproject.kinds: images, table, ...), chosen by `data.kind`.
SCHEMAS: dict[str, type] = {
    "data": object,
    "train": TrainSchema,
    "export": ExportSchema,
}

CHOICES = {
    "data.in_memory": ("auto", True, False),
    "train.early_stopping.mode": ("min", "max"),
}


def load_params(path: str | Path = PARAMS_FILE) -> DictConfig:
    """Read `params.yaml` and check it against the schema; raise ConfigError naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found. Run `make params` to compose it from {CONF_DIR}/.")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # YAML syntax errors come in several types
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return validate(cfg, source=str(path))


def validate(cfg: DictConfig, source: str = PARAMS_FILE) -> DictConfig:
    kind = None
    for section, schema in SCHEMAS.items():
        if section not in cfg:
            raise ConfigError(f"{source}: missing section '{section}'.", key=section)
        if section == "data":
            try:
                kind = kinds.for_config(cfg.data)
            except kinds.KindError as exc:
                raise ConfigError(f"{source}: {exc}", key="data.kind") from None
            schema = kind.schema
        try:
            # Merging into the schema type-checks every key; the stages keep the plain values.
            OmegaConf.merge(OmegaConf.structured(schema), cfg[section])
        except OmegaConfBaseException as exc:
            key = f"{section}.{exc.full_key}" if getattr(exc, "full_key", None) else section
            known = ", ".join(f.name for f in dataclasses.fields(schema))
            raise ConfigError(
                f"{source}: bad key or value '{key}': {str(exc).splitlines()[0]}. "
                f"Known keys under '{section}': {known}. Fix it in {CONF_DIR}/ and run "
                "`make params`, or pass a valid override.",
                key=key,
            ) from exc
    if "model" not in cfg or "_target_" not in cfg.model:
        raise ConfigError(f"{source}: 'model._target_' is missing; choose a model with model=cnn.")
    for dotted, allowed in {**CHOICES, **kind.choices}.items():
        value = OmegaConf.select(cfg, dotted)
        if value not in allowed:
            raise ConfigError(
                f"{source}: '{dotted}' is {value!r}; expected one of {allowed}.", key=dotted
            )
    kind.check_config(cfg.data, source)
    split = cfg.data.split
    if not (0 < split.val < 1 and 0 < split.test < 1 and split.val + split.test < 1):
        raise ConfigError(
            f"{source}: 'data.split' fractions must be in (0, 1) and sum below 1.", key="data.split"
        )
    return cfg


def compose(overrides: list[str] | None = None, conf_dir: str | Path = CONF_DIR) -> DictConfig:
    """Compose `conf/` exactly as DVC's Hydra integration does for `dvc exp run`."""
    cfg, _ = _compose(overrides, conf_dir)
    OmegaConf.resolve(cfg)
    return cfg


def _compose(overrides: list[str] | None, conf_dir: str | Path) -> tuple[DictConfig, list[Path]]:
    """The unresolved composition, and the files of conf/ it was made from (later ones win)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    conf_dir = Path(conf_dir).resolve()
    with initialize_config_dir(str(conf_dir), version_base=None):
        cfg = hydra_compose(
            config_name="config", overrides=list(overrides or []), return_hydra_config=True
        )
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    groups = [conf_dir / group / f"{option}.yaml" for group, option in choices.items()]
    groups = [f for f in groups if f.is_file()]
    # The order in which they apply: group files, conf/config.yaml (`_self_` comes last in its
    # defaults), then `# @package _global_` files such as +experiment=... presets.
    late = [f for f in groups if _is_global(f)]
    return cfg, [*(f for f in groups if f not in late), conf_dir / "config.yaml", *late]


def _is_global(file: Path) -> bool:
    return file.name == "config.yaml" or "@package _global_" in file.read_text()


def _defined_in(key: str, files: list[Path]) -> str | None:
    """The conf/ file that sets `key` (dotted): the last of the composition's files that does."""
    conf_dir, found = next(f.parent for f in files if f.name == "config.yaml"), None
    for file in files:
        try:
            node = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # only a hint for the message: Hydra reports unreadable files itself
        # conf/config.yaml and `# @package _global_` files set keys from the root; a group's
        # file (conf/model/cnn.yaml) sets them under its group (model.).
        if _is_global(file):
            prefix = ""
        else:
            prefix = file.parent.relative_to(conf_dir).as_posix().replace("/", ".") + "."
        if not key.startswith(prefix):
            continue
        for part in re.findall(r"[^.\[\]]+", key[len(prefix) :]):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                break
        else:
            found = f"{CONF_DIR}/{file.relative_to(conf_dir).as_posix()}"
    return found


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


def _check_interpolations(cfg: DictConfig, files: list[Path]) -> None:
    """Every `${...}` resolves; else one line naming the key, its file and the missing target."""
    for key, raw in _leaves(OmegaConf.to_container(cfg, resolve=False)):
        if not (isinstance(raw, str) and "${" in raw):
            continue
        try:
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException as exc:
            where = _defined_in(key, files) or CONF_DIR
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"{where}: '{key}: {raw}' does not resolve ({reason}). Point it at an existing "
                "key, or restore the key it names."
            ) from exc


def compose_checked(
    overrides: list[str] | None = None, conf_dir: str | Path = CONF_DIR
) -> DictConfig:
    """Compose `conf/`, then check it as the stages will: every interpolation resolves, every key
    is known and of its type. Each problem raises a ConfigError of one line naming the file (when
    known), the key and the fix; what `make params` writes has passed this."""
    from hydra.errors import HydraException

    try:
        cfg, files = _compose(overrides, conf_dir)
    except (HydraException, OmegaConfBaseException) as exc:
        # Hydra's messages span lines, and end with the search path (no help to a user)
        message = " ".join(str(exc).split("Config search path")[0].split())
        raise ConfigError(f"{CONF_DIR}/: cannot compose: {message}") from exc
    _check_interpolations(cfg, files)
    OmegaConf.resolve(cfg)
    try:
        validate(cfg, source=f"{CONF_DIR}/")
    except ConfigError as exc:
        where = _defined_in(exc.key, files) if exc.key else None
        if where is None:
            raise
        raise ConfigError(str(exc).replace(f"{CONF_DIR}/:", f"{where}:", 1), key=exc.key) from exc
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def instantiate_model(model_cfg: DictConfig, **shape: Any):
    """Build the model from its `_target_`, naming the bad key when the config does not fit."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(model_cfg, **shape)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, ConfigError):  # the model's own message names the key
            raise exc.__cause__ from None
        if isinstance(exc.__cause__, TypeError) and "unexpected keyword" in str(exc.__cause__):
            raise ConfigError(
                f"model: '{model_cfg.get('_target_')}' does not take this data's input "
                f"({', '.join(sorted(shape))}): {exc.__cause__}. Choose a model that does "
                "(a table: model=mlp; images: model=cnn, mlp or timm).",
                key="model",
            ) from exc
        raise ConfigError(
            f"model: cannot build '{model_cfg.get('_target_')}': {exc}. "
            "Check the keys in conf/model/ against the class's arguments."
        ) from exc


def write_params(
    path: str | Path = PARAMS_FILE,
    overrides: list[str] | None = None,
    conf_dir: str | Path = CONF_DIR,
) -> None:
    """Compose and check `conf/`, then replace params.yaml at once (on an error it is untouched)."""
    from ..core.io import atomic_write_text

    atomic_write_text(Path(path), to_yaml(compose_checked(overrides, conf_dir)))


@entry_point
def main(argv: list[str] | None = None) -> int:
    """`python -m mlproject.pipeline.config [--check] [overrides...]`: write or check params.yaml.
    A bad conf/ prints one line naming the file, key and fix, and exits 1 (MLPROJECT_DEBUG=1
    also prints the traceback)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    overrides = [a for a in args if a != "--check"]
    expected = to_yaml(compose_checked(overrides))
    if check:
        actual = Path(PARAMS_FILE).read_text() if Path(PARAMS_FILE).exists() else ""
        if actual != expected:
            print(f"{PARAMS_FILE} differs from the composition of {CONF_DIR}/; run `make params`.")
            return 1
        print(f"{PARAMS_FILE} matches {CONF_DIR}/.")
        return 0
    from ..core.io import atomic_write_text

    atomic_write_text(Path(PARAMS_FILE), expected)
    print(f"wrote {PARAMS_FILE} from {CONF_DIR}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
