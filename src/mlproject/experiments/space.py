"""The HPO search space, read from conf/hpo/*.yaml and checked key by key: a mistake names the
file and the key (`params.train.lr.low`), before any trial runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .dvcexp import PARAMS, ExperimentError

KNOWN = {"study", "metric", "fixed", "sampler", "pruner", "enqueue", "params"}
TYPES = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}}
TYPES["categorical"] = {"choices"}


@dataclass
class Space:
    study: str
    params: dict[str, dict[str, Any]]
    metric: str | None = None
    fixed: list[str] = field(default_factory=list)
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    def suggest(self, trial) -> list[str]:
        """Sample every key; return the Hydra overrides (config groups first)."""
        out = []
        for key, spec in sorted(self.params.items(), key=lambda kv: "." in kv[0]):
            kind = spec["type"]
            if kind == "categorical":
                value = trial.suggest_categorical(key, list(spec["choices"]))
            elif kind == "float":
                value = trial.suggest_float(
                    key,
                    spec["low"],
                    spec["high"],
                    log=spec.get("log", False),
                    step=spec.get("step"),
                )
            else:
                value = trial.suggest_int(
                    key,
                    spec["low"],
                    spec["high"],
                    log=spec.get("log", False),
                    step=spec.get("step", 1),
                )
            out.append(f"{key}={value}")
        return out


def load_space(
    path: Path, conf_dir: Path = Path("conf"), params_file: Path = Path(PARAMS)
) -> Space:
    def fail(key: str, why: str):
        raise ExperimentError(f"{path}: '{key}': {why}")

    if not path.is_file():
        raise ExperimentError(f"{path}: no such search space file (see conf/hpo/default.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: expected a mapping of {', '.join(sorted(KNOWN))}")
    for key in raw:
        if key not in KNOWN:
            fail(key, f"unknown key; known: {', '.join(sorted(KNOWN))}")
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        fail("params", "must map each key to search to its range")
    known_params = yaml.safe_load(params_file.read_text()) if params_file.is_file() else {}
    for key, spec in params.items():
        _check_param(f"params.{key}", key, spec, conf_dir, known_params, fail)
    fixed = raw.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(o, str) and "=" in o for o in fixed):
        fail("fixed", "must be a list of overrides like 'train.epochs=10'")
    for section in ("sampler", "pruner"):
        if not isinstance(raw.get(section) or {}, dict):
            fail(section, "must be a mapping")
    pruner = raw.get("pruner") or {}
    if pruner.get("type", "median") not in ("median", "none"):
        fail("pruner.type", f"must be median or none, got {pruner.get('type')!r}")
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(e, dict) for e in enqueue):
        fail("enqueue", "must be a list of {key: value} mappings")
    for i, entry in enumerate(enqueue):
        for key in entry:
            if key not in params:
                fail(f"enqueue[{i}].{key}", "is not a key of params")
    study = raw.get("study") or path.stem
    if not isinstance(study, str) or not study.replace("-", "").replace("_", "").isalnum():
        fail("study", "must be a name of letters, digits, - and _")
    return Space(
        study=study,
        params=params,
        metric=raw.get("metric"),
        fixed=list(fixed),
        sampler=raw.get("sampler") or {},
        pruner=pruner,
        enqueue=enqueue,
    )


def _check_param(where: str, key: str, spec: Any, conf_dir: Path, known: dict, fail) -> None:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        fail(where, "needs type: float, int or categorical")
    kind = spec["type"]
    extra = set(spec) - TYPES[kind] - {"type"}
    if extra:
        fail(f"{where}.{sorted(extra)[0]}", f"not a setting of a {kind} range")
    group = conf_dir / key
    if group.is_dir():  # a config group: choices are its options
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if kind != "categorical":
            fail(where, f"is a config group: use type: categorical with choices from {options}")
        for choice in spec.get("choices") or []:
            if choice not in options:
                fail(f"{where}.choices", f"'{choice}' is not in {group}/ ({', '.join(options)})")
    elif not _has(known, key):
        fail(where, f"no such key in {PARAMS} (nor a config group in {conf_dir}/)")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            fail(f"{where}.choices", "must be a non-empty list")
        return
    for bound in ("low", "high"):
        value = spec.get(bound)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            fail(f"{where}.{bound}", f"must be a number, got {value!r}")
        if kind == "int" and not isinstance(value, int):
            fail(f"{where}.{bound}", f"must be an integer for type int, got {value!r}")
    if spec["low"] >= spec["high"]:
        fail(where, f"low ({spec['low']}) must be below high ({spec['high']})")
    if spec.get("log") and spec["low"] <= 0:
        fail(f"{where}.low", "must be > 0 with log: true")
    if spec.get("log") and spec.get("step") is not None and kind == "float":
        fail(f"{where}.step", "cannot be combined with log: true")


def _has(tree: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True
