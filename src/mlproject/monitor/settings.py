"""The `monitor:` section of params.yaml, read with PyYAML and checked here.

Monitoring runs where production logs live, with the `monitor` dependency group only, so it reads
params.yaml without OmegaConf or Hydra (params.yaml is already the resolved composition of conf/).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import SettingsError  # a `monitor.*` key is missing, unknown or out of range
from ..core.paths import PARAMS

PARAMS_FILE = PARAMS

__all__ = ["SettingsError", "load_settings", "from_dict"]


@dataclass(frozen=True)
class ProfileSettings:
    bins: int = 10
    sample_size: int = 5000
    seed: int = 0


@dataclass(frozen=True)
class DriftSettings:
    window: int = 10000
    min_records: int = 100
    ks_pvalue: float = 0.01
    ks_statistic: float = 0.1
    psi: float = 0.2
    min_drifted_features: int = 1
    chi2_pvalue: float = 0.01
    class_shift: float = 0.1
    # Categorical columns: chi-square on the frequencies (p < chi2_pvalue, corrected) with a
    # Jensen-Shannon distance (base 2) of at least this: Evidently's and NannyML's default 0.1.
    jensen_shannon: float = 0.1
    # Any column: drifts when its missing rate moves this far (absolute) from training's.
    missing_shift: float = 0.1
    # Categorical columns: drift when this share of the window holds categories never seen in
    # training (they are counted and listed whatever their share).
    new_category_share: float = 0.05
    # Over the per-column p-values of one report: benjamini-hochberg (false discovery rate),
    # bonferroni (family-wise error) or none.
    correction: str = "benjamini-hochberg"


CORRECTIONS = ("benjamini-hochberg", "bonferroni", "none")


@dataclass(frozen=True)
class MonitorSettings:
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)


def _build(cls: type, values: Any, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise SettingsError(f"'{where}' must be a mapping, got {type(values).__name__}.")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(f"unknown key '{where}.{unknown[0]}'; known keys: {', '.join(known)}.")
    kwargs = {}
    for name, value in values.items():
        kind = known[name].type
        if kind in ("str", str):
            if not isinstance(value, str):
                raise SettingsError(f"'{where}.{name}' must be a string, got {value!r}.")
            kwargs[name] = value
            continue
        if kind in ("int", int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise SettingsError(f"'{where}.{name}' must be a number ({kind}), got {value!r}.")
        kwargs[name] = value
    return cls(**kwargs)


def check(settings: MonitorSettings) -> MonitorSettings:
    p, d = settings.profile, settings.drift
    rules = [
        (p.bins >= 2, "monitor.profile.bins", "at least 2"),
        (p.sample_size >= 10, "monitor.profile.sample_size", "at least 10"),
        (d.window >= 1, "monitor.drift.window", "at least 1"),
        (1 <= d.min_records <= d.window, "monitor.drift.min_records", "between 1 and window"),
        (0 < d.ks_pvalue < 1, "monitor.drift.ks_pvalue", "in (0, 1)"),
        (0 <= d.ks_statistic <= 1, "monitor.drift.ks_statistic", "in [0, 1]"),
        (d.psi > 0, "monitor.drift.psi", "above 0"),
        (d.min_drifted_features >= 1, "monitor.drift.min_drifted_features", "at least 1"),
        (0 < d.chi2_pvalue < 1, "monitor.drift.chi2_pvalue", "in (0, 1)"),
        (0 <= d.class_shift <= 1, "monitor.drift.class_shift", "in [0, 1]"),
        (0 < d.jensen_shannon <= 1, "monitor.drift.jensen_shannon", "in (0, 1]"),
        (0 < d.missing_shift <= 1, "monitor.drift.missing_shift", "in (0, 1]"),
        (0 < d.new_category_share <= 1, "monitor.drift.new_category_share", "in (0, 1]"),
        (
            d.correction in CORRECTIONS,
            "monitor.drift.correction",
            f"one of {', '.join(CORRECTIONS)}",
        ),
    ]
    for ok, key, expected in rules:
        if not ok:
            raise SettingsError(f"'{key}' must be {expected}.")
    return settings


def from_dict(section: Any) -> MonitorSettings:
    if section is None:
        return MonitorSettings()
    if not isinstance(section, dict):
        raise SettingsError("'monitor' must be a mapping.")
    unknown = sorted(set(section) - {"profile", "drift"})
    if unknown:
        raise SettingsError(f"unknown key 'monitor.{unknown[0]}'; known keys: profile, drift.")
    return check(
        MonitorSettings(
            profile=_build(ProfileSettings, section.get("profile"), "monitor.profile"),
            drift=_build(DriftSettings, section.get("drift"), "monitor.drift"),
        )
    )


def load_settings(path: str | Path = PARAMS_FILE) -> MonitorSettings:
    """The `monitor:` section of params.yaml; defaults when the file or section is absent."""
    path = Path(path)
    if not path.is_file():
        return MonitorSettings()
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return from_dict(params.get("monitor"))
    except SettingsError as exc:
        raise SettingsError(
            f"{path}: {exc} Fix it in conf/config.yaml and run `make params`."
        ) from exc
