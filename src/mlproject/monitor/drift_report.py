"""The drift report: drift.json, drift.md (a row per feature, the predictions, the live quality)
and two plots (input features; predicted classes, or a regression model's predicted values)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_dir, write_json
from .window import Window

# The predictions' plot, by the summary's type (drift.json `predictions.type`).
PREDICTION_PLOTS = {"classes": "classes.png", "numeric": "predicted.png"}
CORRECTION_NAMES = {
    "benjamini-hochberg": "Benjamini-Hochberg (false discovery rate)",
    "bonferroni": "Bonferroni",
    "none": "none",
}


def number(value: Any, fmt: str) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, fmt)
    )


def prediction_subject(p: dict[str, Any]) -> str:
    """What the predictions are, in words: "predicted classes" or "predicted values"."""
    return "predicted values" if p.get("type") == "numeric" else "predicted classes"


def feature_row(name: str, r: dict[str, Any]) -> str:
    """One feature's line of the table: its test, statistic, p-values, effect size, missing
    rates, new categories and verdict."""
    if r["type"] == "categorical":
        test, statistic = "chi-square", number(r["chi2_statistic"], ".2f")
        distance = f"JS {number(r['jensen_shannon'], '.3f')}"
        new = r["new_categories"]
        new_text = f"{new['count']} ({new['share']:.1%})" if new["count"] else "0"
    else:
        test, statistic = "KS", number(r["ks_statistic"], ".3f")
        distance = f"PSI {number(r['psi'], '.3f')}"
        new_text = ""
    missing = (
        f"{r['missing_rate_reference']:.1%} → {r['missing_rate_current']:.1%}"
        if r["missing_rate_reference"] or r["missing_rate_current"]
        else "0%"
    )
    verdict = ("yes: " + ", ".join(r["reasons"])) if r["drift"] else "no"
    return (
        f"| {name} | {r['type']} | {test} | {statistic} | {number(r['pvalue'], '.2e')} "
        f"| {number(r['pvalue_adjusted'], '.2e')} | {distance} | {missing} | {new_text} "
        f"| {verdict} |"
    )


def render_markdown(result: dict[str, Any]) -> str:
    w, ref, t = result["window"], result["reference"], result["thresholds"]
    verdict = "**Drift detected**" if result["drift"] else "No drift"
    model = ref.get("model") or {}
    unit = ref["unit"]
    lines = [
        f"## Drift report: {verdict}",
        "",
        f"- Window: {w['n']} records from {w['source']}",
        f"- Reference: model `{model.get('name')}` (sha256 {str(model.get('sha256'))[:12]}), "
        f"{ref['n_train']} training {unit}, {prediction_subject(result['predictions'])} of "
        f"{ref['n_test']} test {unit}",
    ]
    other = [m for m in w.get("models", {}) if m and m != model.get("sha256")]
    if other:
        lines.append(
            f"- Note: {len(other)} other model version(s) in the window "
            f"({', '.join(m[:12] for m in other)})"
        )
    correction = CORRECTION_NAMES.get(t.get("correction", "none"), t.get("correction"))
    lines += [
        f"- Drifted features: {len(result['drifted_features'])} of {len(result['features'])}"
        + (f" ({', '.join(result['drifted_features'])})" if result["drifted_features"] else ""),
        "",
        f"| feature | type | test | statistic | p-value | p corrected ({correction}) "
        "| distance | missing (train → window) | new categories | drift |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [feature_row(name, r) for name, r in result["features"].items()]
    listed = {
        name: r["new_categories"]
        for name, r in result["features"].items()
        if r["type"] == "categorical" and r["new_categories"]["count"]
    }
    if listed:
        lines += ["", "Categories never seen in training (rows in the window):", ""]
        lines += [
            f"- {name}: "
            + ", ".join(f"`{v}` ({c})" for v, c in new["values"].items())
            + (
                f" and {new['count'] - len(new['values'])} more"
                if new["count"] > len(new["values"])
                else ""
            )
            for name, new in listed.items()
        ]
    lines += prediction_lines(result["predictions"])
    lines += quality_lines(result.get("quality"))
    lines += [
        "",
        "![Input features](features.png)",
        "",
        f"![{prediction_subject(result['predictions']).capitalize()}]"
        f"({PREDICTION_PLOTS[result['predictions'].get('type', 'classes')]})",
        "",
        f"Thresholds (monitor.drift), p-values corrected by {correction} over the features: "
        f"a numeric feature drifts when KS p < {t['ks_pvalue']} with statistic >= "
        f"{t['ks_statistic']}, or PSI >= {t['psi']}; a categorical one when chi-square p < "
        f"{t['chi2_pvalue']} with Jensen-Shannon distance >= {t['jensen_shannon']}, or when "
        f"new categories hold >= {t['new_category_share']} of the window; any feature when its "
        f"missing rate moves by >= {t['missing_shift']}. Input drift needs "
        f"{t['min_drifted_features']} drifted feature(s); "
        + (
            "the predicted value drifts as a numeric feature does (its p-value corrected with "
            "theirs)."
            if result["predictions"].get("type") == "numeric"
            else f"predicted classes drift when chi-square p < {t['chi2_pvalue']} with total "
            f"variation >= {t['class_shift']}."
        ),
        "",
    ]
    return "\n".join(lines)


def prediction_lines(p: dict[str, Any]) -> list[str]:
    """The predictions' paragraph and table: class shares, or a predicted value's quantiles."""
    state = "drift" if p["drift"] else "no drift"
    if p.get("type") == "numeric":
        if p["ks_statistic"] is None:
            return ["", f"Predicted values: none in the window (all null): {state}."]
        why = f" ({', '.join(p['reasons'])})" if p.get("reasons") else ""
        lines = [
            "",
            f"Predicted values: KS statistic {p['ks_statistic']:.3f} (p-value "
            f"{number(p['pvalue'], '.2e')}, corrected {number(p['pvalue_adjusted'], '.2e')}), "
            f"PSI {p['psi']:.3f}, mean {p['reference_mean']:.4g} (test split) → "
            f"{p['current_mean']:.4g} (window), {p['missing_rate_current']:.1%} null: "
            f"{state}{why}.",
            "",
            "| quantile | test split | window |",
            "|---|---:|---:|",
        ]
        current = p.get("current_quantiles", {})
        return lines + [
            f"| {key} | {value:.4g} | {number(current.get(key), '.4g')} |"
            for key, value in p.get("reference_quantiles", {}).items()
        ]
    chi2 = "n/a" if p["chi2_pvalue"] is None else f"{p['chi2_pvalue']:.2e}"
    lines = [
        "",
        f"Predicted classes: chi-square p-value {chi2}, total variation distance "
        f"{p['total_variation']:.3f}: {state}.",
    ]
    if p["unknown_classes"]:
        lines.append(f"Classes the reference does not know: {p['unknown_classes']}.")
    lines += ["", "| class | reference share | current share |", "|---|---:|---:|"]
    return lines + [
        f"| {c} | {a:.3f} | {b:.3f} |"
        for c, a, b in zip(p["classes"], p["reference_shares"], p["current_shares"], strict=True)
    ]


def quality_lines(q: dict[str, Any] | None) -> list[str]:
    """Live quality (with --actuals): the join's counts and each metric, live beside test."""
    if not q:
        return []
    unknown = (
        f"; {q['unknown']} unknown to the logs"
        + (f" (e.g. {', '.join(f'`{i}`' for i in q['unknown_ids'])})" if q["unknown_ids"] else "")
        if q["unknown"]
        else ""
    )
    test = q.get("test") or {}
    lines = [
        "",
        f"### Live quality: {q['matched']} of {q['n_actuals']} actuals matched a logged "
        f"prediction{unknown}",
        "",
        f"Ground truth from {q['actuals']}, joined on the logged records' ids "
        f"({q['logged_ids']} logged ids"
        + (f", {q['repeated_ids']} logged more than once and left out" if q["repeated_ids"] else "")
        + f"); the test split's from {q['test_source']}"
        + (
            f"; {q['without_prediction']} matched record(s) hold no prediction (null) and are "
            "not scored"
            if q.get("without_prediction")
            else ""
        )
        + ("" if test else " (not found)")
        + ".",
        "",
        "| metric | live | test split |",
        "|---|---:|---:|",
    ]
    return lines + [
        f"| {name} | {value:.4g} | {number(test.get(name), '.4g')} |"
        for name, value in q["metrics"].items()
    ]


def plot_features(profile: dict[str, Any], window: Window, path: Path) -> None:
    """Per feature: histograms of training sample and window (numeric) or the shares of each
    category (categorical), five to a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(profile["features"])
    cols = min(len(names), 5)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for i, name in enumerate(names):
        ax, ref = axes.flat[i], profile["features"][name]
        cur = window.column(i, name)
        if ref.get("type") == "categorical":
            labels = list(ref["categories"]) + ["(new)"]
            index = {c: k for k, c in enumerate(ref["categories"])}
            counts = np.zeros(len(labels))
            for v in np.asarray(cur, dtype=object).tolist():
                if v != "":
                    counts[index.get(v, len(labels) - 1)] += 1
            x = np.arange(len(labels))
            ax.bar(x - 0.2, list(ref["shares"]) + [0.0], width=0.4, label="reference (train)")
            ax.bar(x + 0.2, counts / max(counts.sum(), 1), width=0.4, label="window")
            ax.set_xticks(x, [str(v)[:12] for v in labels], fontsize=6, rotation=45)
        else:
            ref_values = np.asarray(ref["sample"], dtype=np.float64)
            cur = np.asarray(cur, dtype=np.float64)
            cur = cur[~np.isnan(cur)]
            both = np.concatenate([ref_values, cur])
            lo, hi = both.min(), both.max()
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
            ax.hist(ref_values, bins=bins, density=True, alpha=0.5, label="reference (train)")
            if len(cur):
                ax.hist(cur, bins=bins, density=True, alpha=0.5, label="window")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def plot_predicted_values(profile: dict[str, Any], window: Window, path: Path) -> None:
    """Histograms of the test split's predicted values and the window's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.asarray(profile["predicted"]["sample"], dtype=np.float64)
    cur = np.asarray(window.predicted, dtype=np.float64)
    cur = cur[~np.isnan(cur)]  # logged null: no prediction
    both = np.concatenate([ref, cur])
    lo, hi = both.min(), both.max()
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference (test split)")
    ax.hist(cur, bins=bins, density=True, alpha=0.5, label="window")
    ax.set_xlabel("predicted value")
    ax.legend(fontsize=7)
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
            name = PREDICTION_PLOTS[result["predictions"].get("type", "classes")]
            if name == "classes.png":
                plot_classes(result, tmp / name)
            else:
                plot_predicted_values(profile, window, tmp / name)
