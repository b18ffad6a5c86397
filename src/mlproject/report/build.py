"""Build the report: collect base vs head into one dict, evaluate the gate, render, write.

reports/pr/report.json   everything below, the input of every rendering
reports/pr/report.md     the markdown (images inline, by relative path)
reports/pr/plots/*.png   base | head plots
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import tasks
from ..core.io import atomic_dir
from ..core.paths import EVAL_REPORTS, MODEL_CARD
from . import REPORT_DIR
from .base import base_model_file, base_outputs, read_base_bytes, read_base_file, rebase_metrics
from .diff import (
    ci_context,
    data_version,
    finish_dvc_diffs,
    flatten,
    git,
    load_params,
    metric_tables,
    model_info,
    params_changed,
    resolve_base,
    settle_marks,
    start_dvc_diffs,
)
from .gate import GateConfig, evaluate
from .render import render
from .significance import from_texts

PREDICTIONS = (EVAL_REPORTS / "predictions.csv").as_posix()


def head_info(cwd: str | Path = ".", env: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    # On a pull_request event HEAD is GitHub's merge commit; the PR's own head is more useful.
    sha = env.get("PR_HEAD_SHA") or git("rev-parse", "HEAD", cwd=cwd)
    # In CI the workspace differs from the commit because the run reproduced the outputs; that
    # is the point, not uncommitted work.
    dirty = not env.get("GITHUB_ACTIONS") and bool(
        git("status", "--porcelain", "--untracked-files=no", cwd=cwd, check=False)
    )
    return {"rev": sha, "short": sha[:7], "dirty": dirty}


def gate_inputs(tables: list[dict[str, Any]], gate: GateConfig) -> tuple[dict, dict]:
    """(head, base) metric values of the gate's metrics file, from the diff rows."""
    rows = next((t["rows"] for t in tables if t["file"] == gate.metrics_file), [])
    head = {r["name"]: r["new"] for r in rows if r["new"] is not None}
    base = {r["name"]: r["old"] for r in rows if r["old"] is not None}
    return head, base


def model_tasks(
    read_base: Callable[[str], str | None], cwd: Path, params: dict[str, Any]
) -> tuple[str, str | None]:
    """(head's task, base's task or None when unknown): the top-level `task` of each model card
    (absent: classification); head without a card falls back on params.yaml's `data.task`."""
    card = MODEL_CARD.as_posix()
    head_card = _card(cwd / card)
    if head_card is None:
        head = tasks.name_of((params or {}).get("data") or {})
    else:
        head = tasks.name_of(head_card)
    base_text = read_base(card)
    base_card = _card_text(base_text)
    return head, (tasks.name_of(base_card) if base_card is not None else None)


def _card(path: Path) -> dict[str, Any] | None:
    return _card_text(path.read_text()) if path.is_file() else None


def _card_text(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        card = json.loads(text)
    except json.JSONDecodeError:
        return None
    return card if isinstance(card, dict) else None


# JSON files shown like metrics (folded when long) though dvc.yaml does not declare them so.
DETAIL_FILES = ("reports/eval/classes.json",)


def json_diff(read_base, files: tuple[str, ...], cwd: Path) -> dict[str, dict]:
    """`dvc metrics diff`-shaped entries for JSON files of the base (`read_base(path)`: from git,
    or the rebuilt base's worktree) and of head (disk)."""
    out = {}
    for file in files:
        old_text, new_path = read_base(file), cwd / file
        try:
            old = flatten(json.loads(old_text)) if old_text else {}
            new = flatten(json.loads(new_path.read_text())) if new_path.is_file() else {}
        except json.JSONDecodeError:
            continue
        if old or new:
            out[file] = {k: {"old": old.get(k), "new": new.get(k)} for k in {**old, **new}}
    return out


def collect(
    base: str | None = None,
    cwd: str | Path = ".",
    out_dir: str | Path | None = None,
    plots: bool = True,
    latency: bool = True,
    detail_files: tuple[str, ...] = DETAIL_FILES,
    base_mode: str | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as JSON-able data; plots rendered into out_dir/plots.

    base_mode (default $BASE_OUTPUTS or auto): where the base's outputs come from, see base.py."""
    cwd = Path(cwd)
    base_sha, base_label = resolve_base(base, cwd)
    params = load_params(cwd)
    gate = GateConfig.from_params(params)
    outputs = base_outputs(
        base_sha,
        cwd,
        base_mode or os.environ.get("BASE_OUTPUTS") or "auto",
        log=lambda message: print(message, file=sys.stderr),
    )
    procs = start_dvc_diffs(base_sha, cwd)
    head = head_info(cwd)
    images: list[dict[str, str]] = []

    # Every file of the base comes from one place: git when its committed outputs are used,
    # else the rebuilt (or pulled) worktree; never a mix of the two.
    def read_base(path: str) -> str | None:
        return read_base_file(outputs, base_sha, path, cwd)

    try:
        if plots and out_dir is not None:  # drawn while DVC computes the diffs
            from .plots import render_plots

            names = {"old": f"({base_sha[:7]})", "new": f"({head['short']})"}
            images = render_plots(
                base_sha,
                out_dir,
                names,
                cwd,
                read_base=read_base,
                read_base_bytes=lambda path: read_base_bytes(outputs, base_sha, path, cwd),
            )
    finally:
        metrics_diff, params_diff = finish_dvc_diffs(procs)
    metrics_diff = rebase_metrics(metrics_diff, outputs)
    extra = tuple(f for f in detail_files if f not in metrics_diff)
    metrics_diff.update(json_diff(read_base, extra, cwd))
    tables = metric_tables(metrics_diff, gate, cwd)
    changed = params_changed(params_diff)
    head_metrics, base_metrics = gate_inputs(tables, gate)
    if not head_metrics and (cwd / gate.metrics_file).is_file():
        head_metrics = flatten(json.loads((cwd / gate.metrics_file).read_text()))
    head_predictions = cwd / PREDICTIONS
    task, base_task = model_tasks(read_base, cwd, params)
    significance = from_texts(
        read_base(PREDICTIONS),
        head_predictions.read_text() if head_predictions.is_file() else None,
        task=task,
        base_task=base_task,
    )
    settle_marks(tables, gate, significance)
    report: dict[str, Any] = {
        "base": {
            "rev": base_sha,
            "short": base_sha[:7],
            "label": base_label,
            "outputs": {k: v for k, v in outputs.items() if k != "dir"},
        },
        "head": head,
        "ci": ci_context(),
        "params": changed,
        "gate_params_changed": any(p["name"].startswith("gate.") for p in changed),
        "metrics": tables,
        "gate": evaluate(gate, head_metrics, base_metrics, significance, task=task),
        "significance": significance,
    }
    if task != tasks.DEFAULT:  # absent = classification, as in the model card
        report["task"] = task
    if not base_metrics:
        report["note"] = (
            f"The base has no `{gate.metrics_file}` yet: every metric is new and "
            "regression checks have nothing to compare with."
        )
    old_data, new_data = data_version(base_sha, cwd), data_version(None, cwd)
    report["data"] = {"old": old_data, "new": new_data, "changed": old_data != new_data}
    model = model_info(
        read_base, cwd, base_model=lambda path: base_model_file(outputs, base_sha, path, cwd)
    )
    if latency:
        from .model import latencies

        model["latency_ms"] = latencies(model.pop("files"))
    else:
        model.pop("files")
    report["model"] = model
    report["plots"] = images
    return report


def build(
    base: str | None = None,
    cwd: str | Path = ".",
    out: str | Path = REPORT_DIR,
    plots: bool = True,
    latency: bool = True,
    base_mode: str | None = None,
) -> dict[str, Any]:
    """Collect and write report.json, report.md and the plots into `out`, all or nothing."""
    out = Path(cwd) / out
    with atomic_dir(out) as tmp:
        report = collect(base, cwd, tmp, plots=plots, latency=latency, base_mode=base_mode)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(render(report, images="inline"))
    return report


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no report yet; run `make report` first.")
    return json.loads(path.read_text())
