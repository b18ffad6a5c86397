"""Collect what changed between the base revision and the workspace, as plain JSON-able data.

Metrics and params come from `dvc metrics diff <base> --json --all` and `dvc params diff <base>
--json` (metrics are git-tracked, so the base needs only git, not a DVC remote). Everything else
at the base (model card, data.dvc, plot data) is read with `git show <base>:<path>`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ProjectError
from ..core.lineage import dvc_outs
from ..core.paths import DATA_DVC, MODEL_CARD
from ..core.proc import CommandError, git, run
from .gate import GateConfig


class ReportError(ProjectError, RuntimeError):
    """The report cannot be built; the message says what is missing and how to fix it."""


# ------------------------------------------------------------------------------------ git, dvc


def git_show(rev: str, path: str, cwd: str | Path = ".") -> str | None:
    """The text of `path` at `rev`, or None when the file does not exist there."""
    result = run(["git", "show", f"{rev}:{path}"], cwd=cwd, check=False)
    return result.stdout if result.returncode == 0 else None


def git_show_bytes(rev: str, path: str, cwd: str | Path = ".") -> bytes | None:
    """The bytes of `path` at `rev` (an image), or None when it does not exist there."""
    result = run(["git", "show", f"{rev}:{path}"], cwd=cwd, check=False, text=False)
    return result.stdout if result.returncode == 0 else None


def _rev_exists(rev: str, cwd: str | Path) -> bool:
    args = ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"]
    return run(["git", *args], cwd=cwd, check=False).returncode == 0


def resolve_base(
    base: str | None = None, cwd: str | Path = ".", env: dict[str, str] | None = None
) -> tuple[str, str]:
    """(commit sha, label) of the base: `base` if given, else the merge-base of HEAD with the PR's
    base branch (GITHUB_BASE_REF in CI) or main/master."""
    env = os.environ if env is None else env
    if base:
        if not _rev_exists(base, cwd):
            raise ReportError(
                f"BASE={base} is not a commit here. Fetch it first "
                "(in CI: actions/checkout with fetch-depth: 0)."
            )
        return git("rev-parse", f"{base}^{{commit}}", cwd=cwd), base
    branches = [env.get("GITHUB_BASE_REF", ""), "main", "master"]
    candidates = [c for b in branches if b for c in (f"origin/{b}", b)]
    for candidate in candidates:
        if _rev_exists(candidate, cwd):
            sha = git("merge-base", "HEAD", candidate, cwd=cwd, check=False)
            if not sha:
                raise ReportError(
                    f"no merge-base between HEAD and {candidate}: the clone is "
                    "shallow; fetch the history (fetch-depth: 0) or pass BASE=<rev>."
                )
            return sha, candidate
    raise ReportError(f"no base branch found (tried {', '.join(candidates)}); pass BASE=<rev>.")


def _start_dvc(*args: str, cwd: str | Path) -> subprocess.Popen:
    """Started, not waited for: the metrics and params diffs run side by side (core.proc.run
    waits); _finish_dvc collects the output and raises CommandError as run would."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.Popen(
        ["dvc", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish_dvc(proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise CommandError(proc.args, proc.returncode, err)
    try:
        return json.loads(out or "{}")  # Python's json reads the NaN that DVC may print
    except json.JSONDecodeError as exc:
        raise ReportError(f"{' '.join(proc.args)} printed no JSON: {out[:200]!r}") from exc


def start_dvc_diffs(base: str, cwd: str | Path = "."):
    """Start `dvc metrics diff` and `dvc params diff` of `base` against the workspace; DVC takes
    a second or two to start, so the caller does other work before `finish_dvc_diffs`."""
    return (
        _start_dvc("metrics", "diff", base, "--json", "--all", cwd=cwd),
        _start_dvc("params", "diff", base, "--json", cwd=cwd),
    )


def finish_dvc_diffs(procs) -> tuple[dict, dict]:
    """(metrics diff, params diff) from the processes `start_dvc_diffs` started."""
    try:
        return _finish_dvc(procs[0]), _finish_dvc(procs[1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


# ------------------------------------------------------------------------------------- metrics


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> {"a.b": value}, the way DVC names nested metrics."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_row(name: str, old: Any, new: Any, direction: str) -> dict[str, Any]:
    """One metric, old -> new, with its delta and a mark: better, worse, same, new, removed, n/a
    (settle_marks then turns better/worse within noise into unchanged)."""
    delta = None
    if _is_num(old) and _is_num(new) and not (math.isnan(old) or math.isnan(new)):
        delta = new - old
    if old is None and new is not None:
        mark = "new"
    elif new is None and old is not None:
        mark = "removed"
    elif delta is None:
        mark = "n/a"  # NaN or a non-number on either side: no honest direction
    elif math.isclose(old, new, rel_tol=1e-6, abs_tol=1e-12):
        mark = "same"  # float noise (e.g. a summation order) is not a change
    elif direction == "neutral":
        mark = "changed"
    else:
        mark = "better" if (delta > 0) == (direction == "higher") else "worse"
    return {
        "name": name,
        "old": old,
        "new": new,
        "delta": delta,
        "direction": direction,
        "mark": mark,
    }


def metric_tables(
    metrics_diff: dict[str, dict], gate: GateConfig, cwd: str | Path = "."
) -> list[dict[str, Any]]:
    """[{file, rows}], the gate's metrics file first; rows in the order the head file lists them."""
    tables = []
    for file, entries in metrics_diff.items():
        head_path = Path(cwd) / file
        order: list[str] = []
        if head_path.is_file():
            try:
                order = list(flatten(json.loads(head_path.read_text())))
            except (json.JSONDecodeError, OSError):
                order = []
        names = [n for n in order if n in entries] + sorted(n for n in entries if n not in order)
        rows = [
            metric_row(n, entries[n].get("old"), entries[n].get("new"), gate.direction(n))
            for n in names
        ]
        tables.append({"file": file, "rows": rows})
    tables.sort(key=lambda t: (t["file"] != gate.metrics_file, t["file"]))
    return tables


def settle_marks(
    tables: list[dict[str, Any]], gate: GateConfig, significance: dict[str, Any]
) -> list[dict[str, Any]]:
    """A row is better or worse only when its change is significant (the significance section
    tested that metric) or beyond its tolerance (`gate.tolerance`); below, it is `unchanged`."""
    for table in tables:
        for row in table["rows"]:
            if row["mark"] not in ("better", "worse"):
                continue
            tested = significance.get(row["name"]) if table["file"] == gate.metrics_file else None
            significant = isinstance(tested, dict) and tested.get("significant")
            if not significant and abs(row["delta"]) <= gate.tolerance_for(row["name"]):
                row["mark"] = "unchanged"
    return tables


def params_changed(params_diff: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for file, entries in params_diff.items():
        for name in sorted(entries):
            entry = entries[name]
            if entry.get("old") != entry.get("new"):
                rows.append(
                    {"file": file, "name": name, "old": entry.get("old"), "new": entry.get("new")}
                )
    return rows


# ------------------------------------------------------------------------------ model and data


def _yaml_at(rev: str | None, path: str, cwd: str | Path) -> Any:
    text = git_show(rev, path, cwd) if rev else _read(Path(cwd) / path)
    if text is None:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def data_version(
    rev: str | None, cwd: str | Path = ".", dvc_file: str | Path = DATA_DVC
) -> str | None:
    """The md5 that `data.dvc` records at `rev` (None: the workspace)."""
    path = Path(cwd) / dvc_file
    text = _read(path) if rev is None else git_show(rev, str(dvc_file), cwd)
    return dvc_outs(text)[0].get("md5")


def locked_md5(rev: str, path: str, cwd: str | Path = ".") -> str | None:
    """The md5 of an output as dvc.lock records it at `rev`."""
    lock = _yaml_at(rev, "dvc.lock", cwd) or {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == path:
                return out.get("md5")
    return None


def cache_file(md5: str, cwd: str | Path = ".") -> Path | None:
    """Where DVC 3 keeps a file with this md5 in the local cache, if it is there."""
    cache = os.environ.get("DVC_CACHE_DIR") or str(Path(cwd) / ".dvc" / "cache")
    path = Path(cache) / "files" / "md5" / md5[:2] / md5[2:]
    return path if path.is_file() else None


def model_info(
    read_base: Callable[[str], str | None],
    cwd: str | Path = ".",
    card_path: str = MODEL_CARD.as_posix(),
    base_model: Callable[[str], Path | None] = lambda path: None,
):
    """Size, sha256 and file of the ONNX model at base and head (from the model cards). The
    base's card comes from `read_base(path)`, its model file from `base_model(path)`."""
    cwd = Path(cwd)
    head_card = _json(_read(cwd / card_path))
    base_card = _json(read_base(card_path))
    model_dir = str(Path(card_path).parent)
    head_file = cwd / model_dir / (head_card or {}).get("file", "model.onnx")
    model_rel = f"{model_dir}/{(base_card or head_card or {}).get('file', 'model.onnx')}"
    base_file = base_model(model_rel)
    return {
        "path": model_rel,
        "size": {
            "old": (base_card or {}).get("size_bytes"),
            "new": head_file.stat().st_size
            if head_file.is_file()
            else (head_card or {}).get("size_bytes"),
        },
        "sha256": {"old": (base_card or {}).get("sha256"), "new": (head_card or {}).get("sha256")},
        "files": {
            "old": str(base_file) if base_file else None,
            "new": str(head_file) if head_file.is_file() else None,
        },
    }


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def ci_context(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """The CI run's link when running in GitHub Actions."""
    env = os.environ if env is None else env
    if not (env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY")):
        return None
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    repo = env["GITHUB_REPOSITORY"]
    return {
        "run_url": f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}",
        "repo_url": f"{server}/{repo}",
        "event": env.get("GITHUB_EVENT_NAME", ""),
    }


def load_params(cwd: str | Path = ".") -> dict[str, Any]:
    path = Path(cwd) / "params.yaml"
    if not path.is_file():
        raise ReportError(f"{path}: not found; run `make params`.")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ReportError(f"{path}: not valid YAML: {exc}") from exc
