"""The quality gate: floors and ceilings on the head's metrics, and the largest regression allowed
against the base. Configured under `gate:` in conf/config.yaml (so in params.yaml)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import tasks
from ..core.errors import ProjectError
from ..core.paths import EVAL_METRICS

# Changes smaller than this are float noise, not regressions.
EPS = 1e-12
# The rules a `gate.<task>` section may hold.
TASK_RULES = ("min", "max", "max_regression")


class GateConfigError(ProjectError, ValueError):
    """The `gate:` section is malformed; the message names the key."""


@dataclass
class GateConfig:
    metrics_file: str = EVAL_METRICS.as_posix()
    min: dict[str, float] = field(default_factory=dict)
    max: dict[str, float] = field(default_factory=dict)
    max_regression: dict[str, float] = field(default_factory=dict)
    lower_is_better: list[str] = field(default_factory=lambda: ["loss", "rmse", "mae"])
    neutral: list[str] = field(default_factory=list)
    # When true, a regression beyond max_regression fails only if it is significant (report
    # section `significance`: McNemar for accuracy, bootstrap for f1_macro; Wilcoxon for rmse
    # and mae), not within noise.
    regression_needs_significance: bool = False
    # A change smaller than this (absolute, by substring of the metric's name, the longest
    # pattern wins) is marked unchanged in the report unless it is significant.
    tolerance: dict[str, float] = field(default_factory=dict)
    # Rules for models of one task only (`gate.regression: {min: {r2: 0}}`), merged over the
    # rules above (a metric named in both: the task's threshold); {task: {rule: {metric: x}}}.
    by_task: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, source: str = "params.yaml") -> GateConfig:
        """Read the `gate:` section of params; a missing section means no gate (always passes)."""
        section = (params or {}).get("gate") or {}
        if not isinstance(section, dict):
            raise GateConfigError(f"{source}: 'gate' must be a mapping, got {section!r}.")
        known = (set(cls.__dataclass_fields__) - {"by_task"}) | set(tasks.TASKS)
        unknown = sorted(set(section) - known)
        if unknown:
            raise GateConfigError(
                f"{source}: unknown key 'gate.{unknown[0]}'. Known keys: {', '.join(sorted(known))}."
            )
        cfg = cls()
        if "metrics_file" in section:
            if not isinstance(section["metrics_file"], str):
                raise GateConfigError(f"{source}: 'gate.metrics_file' must be a path string.")
            cfg.metrics_file = section["metrics_file"]
        for key in ("min", "max", "max_regression", "tolerance"):
            setattr(cfg, key, _thresholds(section.get(key), f"gate.{key}", source))
        for key in ("max_regression", "tolerance"):
            for name, tol in getattr(cfg, key).items():
                if tol < 0:
                    raise GateConfigError(f"{source}: 'gate.{key}.{name}' must be >= 0.")
        flag = section.get("regression_needs_significance", False)
        if not isinstance(flag, bool):
            raise GateConfigError(
                f"{source}: 'gate.regression_needs_significance' must be true or false, "
                f"got {flag!r}."
            )
        cfg.regression_needs_significance = flag
        for task in tasks.TASKS:
            rules = section.get(task)
            if rules is None:
                continue
            if not isinstance(rules, dict) or not set(rules) <= set(TASK_RULES):
                raise GateConfigError(
                    f"{source}: 'gate.{task}' must map some of {', '.join(TASK_RULES)} to "
                    f"thresholds, got {rules!r}."
                )
            cfg.by_task[task] = {
                rule: _thresholds(rules.get(rule), f"gate.{task}.{rule}", source)
                for rule in TASK_RULES
            }
            for name, tol in cfg.by_task[task]["max_regression"].items():
                if tol < 0:
                    raise GateConfigError(
                        f"{source}: 'gate.{task}.max_regression.{name}' must be >= 0."
                    )
        for key in ("lower_is_better", "neutral"):
            value = section.get(key, getattr(cfg, key))
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise GateConfigError(f"{source}: 'gate.{key}' must be a list of name substrings.")
            setattr(cfg, key, list(value))
        return cfg

    def rules(self, task: str | None, rule: str) -> dict[str, float]:
        """The thresholds of one rule (min, max, max_regression) for a model of `task`."""
        scoped = self.by_task.get(tasks.name_of({"task": task}), {}).get(rule, {})
        return {**getattr(self, rule), **scoped}

    def tolerance_for(self, name: str) -> float:
        """The tolerance of a metric: its longest matching pattern's, else 0."""
        matches = [p for p in self.tolerance if p in name]
        return self.tolerance[max(matches, key=len)] if matches else 0.0

    def direction(self, name: str) -> str:
        """'lower', 'higher' or 'neutral' (counts and settings): which way is better for a metric."""
        if any(pattern in name for pattern in self.neutral):
            return "neutral"
        if any(pattern in name for pattern in self.lower_is_better):
            return "lower"
        return "higher"


def _thresholds(value: Any, key: str, source: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GateConfigError(f"{source}: '{key}' must map metric names to numbers, got {value!r}.")
    out = {}
    for name, threshold in value.items():
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise GateConfigError(f"{source}: '{key}.{name}' must be a number, got {threshold!r}.")
        out[str(name)] = float(threshold)
    return out


def _number(value: Any) -> float | None:
    """A metric value as a float; None when absent or not numeric."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def evaluate(
    cfg: GateConfig,
    head: dict[str, Any],
    base: dict[str, Any] | None,
    significance: dict[str, Any] | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """Check head metrics (name -> value) against the config and the base metrics (or None).

    With `regression_needs_significance`, a regression over its tolerance passes when
    `significance[metric]` says it is not significant (no figures for the metric: it fails).

    Returns {"passed": bool, "checks": [{metric, rule, threshold, value, base, ok, reason}]}
    (+ "skipped": [{metric, rule, threshold, reason}] when some rule did not apply).
    A metric named in the config but missing or NaN in the head fails: a gate that cannot measure
    must not pass. The one exception is a metric that belongs to another task than the model's
    `task` (None: classification), e.g. `min.accuracy` for a regression model: absent from the
    head, its rule is skipped and listed, so one `gate:` section serves both tasks.
    """
    base = base or {}
    checks: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    task_name = tasks.name_of({"task": task})

    def other_task(metric: str, rule: str, threshold: float) -> bool:
        owner = tasks.owner(metric)
        if metric in head or owner in (None, task_name):
            return False
        skipped.append(
            {
                "metric": metric,
                "rule": rule,
                "threshold": threshold,
                "reason": f"a {owner} metric; this is a {task_name} model",
            }
        )
        return True

    def check(metric, rule, threshold, ok, reason, value=None, base_value=None):
        checks.append(
            {
                "metric": metric,
                "rule": rule,
                "threshold": threshold,
                "value": value,
                "base": base_value,
                "ok": ok,
                "reason": reason,
            }
        )

    def head_value(metric: str, rule: str, threshold: float) -> float | None:
        value = _number(head.get(metric))
        if value is None:
            check(metric, rule, threshold, False, f"'{metric}' is missing from the head metrics")
        elif math.isnan(value):
            check(metric, rule, threshold, False, f"'{metric}' is NaN", value)
            return None
        return value

    # Floors and ceilings: (rule, bounds, sign: +1 floor / -1 ceiling, "ok" / "failed" operator).
    for rule, bounds, sign, ops in (
        ("min", cfg.rules(task, "min"), 1, (">=", "<")),
        ("max", cfg.rules(task, "max"), -1, ("<=", ">")),
    ):
        for metric, bound in bounds.items():
            if other_task(metric, rule, bound):
                continue
            value = head_value(metric, rule, bound)
            if value is not None:
                ok = sign * (value - bound) >= -EPS  # exactly on the bound passes
                op = ops[0] if ok else ops[1]
                check(metric, rule, bound, ok, f"{metric} {value:.4g} {op} {bound:g}", value)
    for metric, tolerance in cfg.rules(task, "max_regression").items():
        if other_task(metric, "max_regression", tolerance):
            continue
        value = head_value(metric, "max_regression", tolerance)
        if value is None:
            continue
        old = _number(base.get(metric))
        if old is None or math.isnan(old):
            check(
                metric,
                "max_regression",
                tolerance,
                True,
                f"{metric}: no base value to compare with",
                value,
            )
            continue
        worse_by = (value - old) if cfg.direction(metric) == "lower" else (old - value)
        ok = worse_by <= tolerance + EPS
        reason = f"{metric} {old:.4g} -> {value:.4g}: " + (
            f"worse by {worse_by:.4g} ({'within' if ok else 'over'} {tolerance:g})"
            if worse_by > EPS
            else "no regression"
        )
        figures = (significance or {}).get(metric)
        if not ok and cfg.regression_needs_significance and isinstance(figures, dict):
            ok = not figures.get("significant", True)
            reason += (
                f", {'significant' if not ok else 'within noise'} "
                f"(p = {figures.get('p_value', float('nan')):.3g})"
            )
        check(metric, "max_regression", tolerance, ok, reason, value, old)
    result = {"passed": all(c["ok"] for c in checks), "checks": checks}
    if skipped:  # absent otherwise: a classification report stays as it was
        result["skipped"] = skipped
    return result
