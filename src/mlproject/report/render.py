"""Report dict -> markdown. Pure: no I/O, so the PR comment, the job summary and the local report
are the same function of the same JSON, and tests feed it hand-made metrics.

Images: "inline" references the PNGs by relative path (a local viewer, or CML uploading them when
opted in); "artifact" leaves them out and links the CI run's artifacts instead (private repos);
"none" leaves them out.
"""

from __future__ import annotations

import math
from typing import Any

from .. import tasks

IMAGE_MODES = ("inline", "artifact", "none")
MARKS = {
    "better": "🟢 better",
    "worse": "🔴 worse",
    "same": "same",
    "unchanged": "≈ unchanged",
    "new": "new",
    "removed": "removed",
    "changed": "changed",
    "n/a": "n/a",
}
# Tables longer than this (per-class metrics) are folded into a <details> block.
FOLD_ROWS = 20


def fmt(value: Any) -> str:
    """A metric or param value for a table cell."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:g}"
        return f"{value:.3e}"
    if isinstance(value, (list, dict)):
        return f"`{value}`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def fmt_delta(delta: Any) -> str:
    if delta is None:
        return ""
    if delta == 0:
        return "0"
    if isinstance(delta, int):
        return f"{delta:+d}"
    return f"{delta:+.4f}" if 1e-4 <= abs(delta) < 1e5 else f"{delta:+.2e}"


def fmt_bytes(n: Any) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict_line(gate: dict[str, Any]) -> str:
    checks = gate.get("checks", [])
    failed = [c for c in checks if not c["ok"]]
    if not checks and gate.get("skipped"):
        return (
            f"### ✅ Quality gate: passed (none of its {len(gate['skipped'])} checks applies "
            "to this model's task)"
        )
    if not checks:
        return "### ✅ Quality gate: passed (no checks configured under `gate:`)"
    if failed:
        return f"### ❌ Quality gate: FAILED ({len(failed)} of {len(checks)} checks): " + "; ".join(
            c["reason"] for c in failed
        )
    return f"### ✅ Quality gate: passed ({len(checks)} checks)"


def gate_section(gate: dict[str, Any]) -> str:
    rows = [
        ["✅" if c["ok"] else "❌", f"`{c['metric']}`", c["rule"], fmt(c["threshold"]), c["reason"]]
        for c in gate.get("checks", [])
    ]
    out = table(["", "metric", "rule", "threshold", "result"], rows) if rows else ""
    skipped = gate.get("skipped") or []
    if skipped:
        note = "; ".join(f"`{s['metric']}` ({s['rule']}): {s['reason']}" for s in skipped)
        out = (out + "\n\n" if out else "") + f"_Not checked: {note}._"
    return out


def params_section(params: list[dict[str, Any]]) -> str:
    if not params:
        return "No params changed."
    rows = [[f"`{p['name']}`", fmt(p["old"]), fmt(p["new"])] for p in params]
    return table(["param", "base", "head"], rows)


def metrics_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [
            f"`{r['name']}`",
            fmt(r["old"]),
            fmt(r["new"]),
            fmt_delta(r["delta"]),
            MARKS.get(r["mark"], r["mark"])
            + (
                " (lower is better)"
                if r["direction"] == "lower" and r["mark"] in ("better", "worse")
                else ""
            ),
        ]
        for r in rows
    ]
    return table(["metric", "base", "head", "Δ", ""], body)


def metrics_section(tables: list[dict[str, Any]]) -> str:
    parts = []
    for t in tables:
        if not t["rows"]:
            continue
        changed = sum(r["mark"] not in ("same", "unchanged") for r in t["rows"])
        if len(t["rows"]) > FOLD_ROWS:
            parts.append(
                f"<details><summary><code>{t['file']}</code>: {len(t['rows'])} metrics, "
                f"{changed} changed</summary>\n\n{metrics_table(t['rows'])}\n\n</details>"
            )
        else:
            parts.append(f"`{t['file']}`\n\n{metrics_table(t['rows'])}")
    if any(r["mark"] == "unchanged" for t in tables for r in t["rows"]):
        parts.append(
            "_≈ unchanged: a change within `gate.tolerance` that the significance tests do not "
            "call real._"
        )
    return "\n\n".join(parts) if parts else "No metrics found at base or head."


def _pct(old: Any, new: Any) -> str:
    if not old or new is None:
        return ""
    return f" ({(new - old) / old * 100:+.1f}%)"


def model_section(model: dict[str, Any], data: dict[str, Any]) -> str:
    size, lat = model.get("size", {}), model.get("latency_ms", {})
    sha = model.get("sha256", {})

    def ms(v):
        return "n/a" if v is None else f"{v:.3f} ms"

    same_model = sha.get("old") and sha.get("old") == sha.get("new")
    old_data, new_data = data.get("old"), data.get("new")
    rows = [
        [
            "ONNX size",
            fmt_bytes(size.get("old")),
            fmt_bytes(size.get("new")) + _pct(size.get("old"), size.get("new")),
        ],
        [
            "latency (onnxruntime, batch 1, 1 thread, median)",
            ms(lat.get("old")),
            ms(lat.get("new")) + _pct(lat.get("old"), lat.get("new")),
        ],
        [
            "model sha256",
            f"`{(sha.get('old') or 'n/a')[:12]}`",
            f"`{(sha.get('new') or 'n/a')[:12]}`" + (" (same)" if same_model else ""),
        ],
        [
            "data version (data.dvc md5)",
            f"`{(old_data or 'n/a')[:12]}`",
            f"`{(new_data or 'n/a')[:12]}` "
            + ("**changed**" if data.get("changed") else "(unchanged)"),
        ],
    ]
    return table(["", "base", "head"], rows)


def significance_section(sig: dict[str, Any]) -> str:
    """The items that changed (fixed/broken, or improved/worsened: the task says), p-values and
    bootstrap intervals; ends in the one-line verdict."""
    if not sig:
        return ""
    if "error" in sig:
        return f"Not computed: {sig['error']}"
    task = tasks.get(sig.get("task"))
    metrics = [m for m in task.SIGNIFICANCE_METRICS if m in sig]
    rows = [
        [
            f"`{m}`",
            fmt_delta(sig[m]["delta"]),
            f"[{sig[m]['ci95'][0]:+.4f}, {sig[m]['ci95'][1]:+.4f}]",
            f"{sig[m]['p_value']:.3g}",
            sig[m]["test"],
        ]
        for m in metrics
    ]
    return "\n\n".join(
        [
            task.significance_lead(sig),
            table(["metric", "Δ", "95% interval of Δ", "p-value", "test"], rows),
            f"Verdict at α = {sig['alpha']:g}: **{sig['verdict']}**",
        ]
    )


def plots_section(plots: list[dict[str, str]], images: str, run_url: str | None) -> str:
    if not plots:
        return ""
    if images == "inline":
        return "\n\n".join(f"![{p['title']}]({p['image']})" for p in plots)
    names = ", ".join(p["title"] for p in plots)
    if images == "artifact" and run_url:
        return (
            f"{names}: base | head PNGs are in the `pr-report` artifact of "
            f"[this run]({run_url}#artifacts) (kept out of the comment so that a private "
            "repository's plots are not uploaded anywhere else)."
        )
    return f"{names}: rendered to `reports/pr/plots/` (images left out of this report)."


def render(report: dict[str, Any], images: str = "inline") -> str:
    """The whole report as markdown: verdict first, then params, metrics, model, plots."""
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {IMAGE_MODES}, got {images!r}")
    base, head, ci = report["base"], report["head"], report.get("ci") or {}
    gate = report.get("gate") or {"checks": []}

    def commit(info: dict[str, Any]) -> str:
        short = f"`{info['short']}`"
        return f"[{short}]({ci['repo_url']}/commit/{info['rev']})" if ci.get("repo_url") else short

    head_ref = commit(head) + (" + uncommitted changes" if head.get("dirty") else "")
    origin = f" · [CI run]({ci['run_url']})" if ci.get("run_url") else ""
    outputs = base.get("outputs") or {}
    used = {
        "committed": "its committed outputs",
        "pulled": "its outputs pulled from the DVC remote",
        "rebuilt": "its outputs rebuilt here, on this runner",
    }.get(outputs.get("source") or "")
    why = f" ({outputs['why']})" if used and outputs.get("why") else ""
    parts = [
        verdict_line(gate),
        f"**Head** {head_ref} vs **base** `{base.get('label', '')}` ({commit(base)}){origin}"
        + (f" · base: {used}{why}" if used else ""),
    ]
    if report.get("gate_params_changed"):
        parts.append("⚠️ This change edits the gate's own thresholds (`gate.*` params below).")
    if report.get("note"):
        parts.append(f"> {report['note']}")
    parts += [
        gate_section(gate),
        "#### Params changed",
        params_section(report.get("params", [])),
        "#### Metrics",
        metrics_section(report.get("metrics", [])),
    ]
    if report.get("significance"):
        parts += [
            "#### Is the difference real?",
            significance_section(report["significance"]),
        ]
    if report.get("model") or report.get("data"):
        parts += [
            "#### Model and data",
            model_section(report.get("model") or {}, report.get("data") or {}),
        ]
    plots = plots_section(report.get("plots", []), images, ci.get("run_url"))
    if plots:
        parts += ["#### Plots (base | head)", plots]
    return "\n\n".join(p for p in parts if p) + "\n"
