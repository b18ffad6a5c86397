"""The drift report: drift.json, drift.md and two plots (input features, predicted classes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_dir, write_json
from .features import FEATURES
from .window import Window


def render_markdown(result: dict[str, Any]) -> str:
    w, ref, t = result["window"], result["reference"], result["thresholds"]
    verdict = "**Drift detected**" if result["drift"] else "No drift"
    model = ref.get("model") or {}
    lines = [
        f"## Drift report: {verdict}",
        "",
        f"- Window: {w['n']} records from {w['source']}",
        f"- Reference: model `{model.get('name')}` (sha256 {str(model.get('sha256'))[:12]}), "
        f"{ref['n_train']} training images, predicted classes of {ref['n_test']} test images",
    ]
    other = [m for m in w.get("models", {}) if m and m != model.get("sha256")]
    if other:
        lines.append(
            f"- Note: {len(other)} other model version(s) in the window "
            f"({', '.join(m[:12] for m in other)})"
        )
    lines += [
        "",
        "| feature | KS statistic | KS p-value | PSI | reference mean | current mean | drift |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for name, r in result["features"].items():
        lines.append(
            f"| {name} | {r['ks_statistic']:.3f} | {r['ks_pvalue']:.2e} | {r['psi']:.3f} "
            f"| {r['reference_mean']:.4f} | {r['current_mean']:.4f} "
            f"| {'yes' if r['drift'] else 'no'} |"
        )
    p = result["predictions"]
    chi2 = "n/a" if p["chi2_pvalue"] is None else f"{p['chi2_pvalue']:.2e}"
    lines += [
        "",
        f"Predicted classes: chi-square p-value {chi2}, total variation distance "
        f"{p['total_variation']:.3f}: {'drift' if p['drift'] else 'no drift'}.",
    ]
    if p["unknown_classes"]:
        lines.append(f"Classes the reference does not know: {p['unknown_classes']}.")
    lines += ["", "| class | reference share | current share |", "|---|---:|---:|"]
    lines += [
        f"| {c} | {a:.3f} | {b:.3f} |"
        for c, a, b in zip(p["classes"], p["reference_shares"], p["current_shares"], strict=True)
    ]
    lines += [
        "",
        "![Input features](features.png)",
        "",
        "![Predicted classes](classes.png)",
        "",
        f"Thresholds (monitor.drift): a feature drifts when KS p < {t['ks_pvalue']} with "
        f"statistic >= {t['ks_statistic']}, or PSI >= {t['psi']}; input drift needs "
        f"{t['min_drifted_features']} drifted feature(s); predicted classes drift when "
        f"chi-square p < {t['chi2_pvalue']} with total variation >= {t['class_shift']}.",
        "",
    ]
    return "\n".join(lines)


def plot_features(profile: dict[str, Any], window: Window, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FEATURES), figsize=(3.2 * len(FEATURES), 2.8))
    for ax, (i, name) in zip(axes, enumerate(FEATURES), strict=True):
        ref = np.asarray(profile["features"][name]["sample"])
        cur = window.features[:, i]
        lo, hi = min(ref.min(), cur.min()), max(ref.max(), cur.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
        ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference (train)")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, label="window")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def plot_classes(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = result["predictions"]
    x = np.arange(len(p["classes"]))
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(x) + 2), 2.8))
    ax.bar(x - 0.2, p["reference_shares"], width=0.4, label="reference (test split)")
    ax.bar(x + 0.2, p["current_shares"], width=0.4, label="window")
    ax.set_xticks(x, p["classes"], fontsize=7)
    ax.set_ylabel("share of predictions")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def write_report(
    result: dict[str, Any],
    profile: dict[str, Any],
    window: Window,
    out_dir: Path,
    plots: bool = True,
) -> None:
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "drift.json", result)
        (tmp / "drift.md").write_text(render_markdown(result), encoding="utf-8")
        if plots:
            plot_features(profile, window, tmp / "features.png")
            plot_classes(result, tmp / "classes.png")
