"""`make monitor`: compare a window of production data with the training reference profile.

Usage:
    python -m mlproject.monitor.drift --logs /var/log/model     # prediction logs (JSONL)
    python -m mlproject.monitor.drift --data path/to/images     # any image folder

Per input feature: the two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) against the
profile's training sample, and the population stability index over the profile's quantile bins.
Predicted classes: Pearson's chi-square test (scipy.stats.chisquare) against the test split's
predicted-class shares, with the total variation distance as effect size. Thresholds come from
`monitor.drift` in params.yaml. Writes drift.json, drift.md and plots to --out, then exits 0 (no
drift), 1 (drift) or 2 (bad input: the message names the file, line or key).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_dir, read_json, write_json
from .features import FEATURES, image_features
from .profile import (
    CARD_PATH,
    ONNX_PATH,
    PROFILE_PATH,
    ProfileError,
    bin_shares,
    load_profile,
    onnx_session,
    predict_classes,
)
from .settings import DriftSettings, SettingsError, load_settings

OUT_DIR = Path("reports/monitor")
LOG_NAME = "predictions.jsonl"
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
)
# Added to every bin share so that an empty bin does not make PSI infinite.
PSI_EPSILON = 1e-4
# Sample sizes above which the exact KS distribution is too slow to compute; asymptotic is accurate.
KS_EXACT_MAX = 1_000_000


class DriftInputError(ValueError):
    """The window of production data cannot be read or is too small; the message says which."""


@dataclass
class Window:
    """What is compared with the profile: input features and predicted class names."""

    source: str
    features: np.ndarray  # float64 [N, len(FEATURES)]
    predicted: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ reading data


def log_files(folder: Path) -> list[Path]:
    """predictions.jsonl and its rotations predictions.jsonl.1, .2, ... (any order)."""
    if not folder.is_dir():
        raise DriftInputError(f"{folder}: not a folder of prediction logs.")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.name == LOG_NAME or p.name.startswith(LOG_NAME + "."))
    )
    if not files:
        raise DriftInputError(f"{folder}: no {LOG_NAME} (or rotated {LOG_NAME}.N) files.")
    return files


def parse_record(line: str, where: str) -> tuple[float, list[float], str, str]:
    try:
        rec = json.loads(line)
        feats = rec["features"]
        return (
            float(rec["ts"]),
            [float(feats[name]) for name in FEATURES],
            str(rec["predicted"]),
            str(rec.get("model_sha256", "")),
        )
    except json.JSONDecodeError as exc:
        raise DriftInputError(f"{where}: not valid JSON ({exc.msg}).") from exc
    except KeyError as exc:
        raise DriftInputError(f"{where}: record has no field {exc.args[0]!r}.") from exc
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"{where}: bad value in record ({exc}).") from exc


def read_logs(folder: str | Path, window: int) -> Window:
    """The newest `window` records of the prediction logs in `folder`."""
    folder = Path(folder)
    records = []
    partial = 0
    for path in log_files(folder):
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        # A last line without its newline is a record being written (or torn by a crash): skip it.
        if lines and lines[-1].strip():
            partial += 1
        for number, line in enumerate(lines[:-1], start=1):
            if line.strip():
                records.append(parse_record(line, f"{path}:{number}"))
    if not records:
        raise DriftInputError(f"{folder}: the prediction logs hold no complete records.")
    records.sort(key=lambda r: r[0])
    records = records[-window:]
    return Window(
        source=f"logs {folder}",
        features=np.array([r[1] for r in records], dtype=np.float64),
        predicted=[r[2] for r in records],
        info={
            "records": len(records),
            "first_ts": records[0][0],
            "last_ts": records[-1][0],
            "skipped_partial_lines": partial,
            "models": dict(Counter(r[3] for r in records).most_common()),
        },
    )


def image_files(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    if not folder.is_dir():
        raise DriftInputError(f"{folder}: not a folder of images.")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
    )


def read_images(folder: str | Path, card: dict[str, Any], session) -> Window:
    """Every image under `folder` (class sub-folders or not), preprocessed as the server does."""
    from ..core.preprocess import ImageError, open_image, to_pixels

    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise DriftInputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}).")
    spec = card["input"]
    try:
        pixels = np.stack(
            [
                to_pixels(
                    open_image(p), spec["height"], spec["width"], spec["channels"], spec["resize"]
                )
                for p in files
            ]
        )
    except ImageError as exc:
        raise DriftInputError(str(exc)) from exc
    classes = card["classes"]
    predicted = [classes[i] for i in predict_classes(session, card, pixels)]
    return Window(
        source=f"images {folder}",
        features=image_features(pixels),
        predicted=predicted,
        info={"records": len(files), "models": {card.get("sha256", ""): len(files)}},
    )


# ------------------------------------------------------------------------------ statistics


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population stability index: sum (cur - ref) * ln(cur / ref) over bins."""
    ref = np.asarray(reference_shares) + PSI_EPSILON
    cur = np.asarray(current_shares) + PSI_EPSILON
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def feature_drift(ref: dict[str, Any], values: np.ndarray, s: DriftSettings) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    sample = np.asarray(ref["sample"], dtype=np.float64)
    method = "auto" if len(sample) * len(values) <= KS_EXACT_MAX else "asymp"
    ks = ks_2samp(sample, values, method=method)
    edges = np.asarray(ref["bin_edges"], dtype=np.float64)
    value = psi(np.asarray(ref["bin_shares"]), bin_shares(values, edges))
    ks_drift = bool(ks.pvalue < s.ks_pvalue and ks.statistic >= s.ks_statistic)
    return {
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "psi": value,
        "reference_mean": ref["mean"],
        "current_mean": float(values.mean()),
        "drift": bool(ks_drift or value >= s.psi),
    }


def prediction_drift(ref: dict[str, Any], predicted: list[str], s: DriftSettings) -> dict[str, Any]:
    from scipy.stats import chisquare

    classes = list(ref["classes"])
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros(len(classes), dtype=np.int64)
    unknown = Counter()
    for name in predicted:
        if name in index:
            counts[index[name]] += 1
        else:
            unknown[name] += 1
    n = int(counts.sum())
    # Half a count added to the reference keeps classes never predicted on the test split testable.
    ref_counts = np.asarray(ref["counts"], dtype=np.float64) + 0.5
    ref_shares = ref_counts / ref_counts.sum()
    cur_shares = counts / max(n, 1)
    test = chisquare(counts, ref_shares * n) if n else None
    tvd = float(0.5 * np.abs(cur_shares - ref_shares).sum())
    drift = bool(unknown) or bool(
        test is not None and test.pvalue < s.chi2_pvalue and tvd >= s.class_shift
    )
    return {
        "chi2_statistic": float(test.statistic) if test else None,
        "chi2_pvalue": float(test.pvalue) if test else None,
        "total_variation": tvd,
        "classes": classes,
        "reference_shares": [float(v) for v in np.asarray(ref["shares"])],
        "current_shares": [float(v) for v in cur_shares],
        "current_counts": counts.tolist(),
        "unknown_classes": dict(unknown),
        "drift": drift,
    }


def detect(profile: dict[str, Any], window: Window, s: DriftSettings) -> dict[str, Any]:
    """The drift verdict for a window against the profile (a JSON-ready dict)."""
    n = len(window.features)
    if n < s.min_records:
        raise DriftInputError(
            f"{window.source}: {n} records, fewer than "
            f"monitor.drift.min_records = {s.min_records}; wait for more data."
        )
    features = {
        name: feature_drift(profile["features"][name], window.features[:, i], s)
        for i, name in enumerate(FEATURES)
    }
    drifted = [name for name, r in features.items() if r["drift"]]
    predictions = prediction_drift(profile["predicted"], window.predicted, s)
    input_drift = len(drifted) >= s.min_drifted_features
    return {
        "drift": input_drift or predictions["drift"],
        "input_drift": input_drift,
        "prediction_drift": predictions["drift"],
        "drifted_features": drifted,
        "window": {"source": window.source, "n": n, **window.info},
        "reference": {
            "model": profile.get("model"),
            "data": profile.get("data"),
            "n_train": profile["features"][FEATURES[0]]["n"],
            "n_test": profile["predicted"]["n"],
        },
        "thresholds": vars(s).copy(),
        "features": features,
        "predictions": predictions,
    }


# ------------------------------------------------------------------------------ the report


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


def dispatch_retraining(result: dict[str, Any], workflow: str = "retrain.yml") -> None:
    """Start the retraining workflow with the GitHub CLI (needs GH_TOKEN with actions: write)."""
    reason = "drift: " + ", ".join(
        result["drifted_features"] + (["predicted classes"] if result["prediction_drift"] else [])
    )
    subprocess.run(["gh", "workflow", "run", workflow, "--field", f"reason={reason}"], check=True)


# ------------------------------------------------------------------------------ entry point


def run(
    logs: str | None,
    data: str | None,
    profile_path: Path,
    out_dir: Path,
    params: Path,
    card_path: Path,
    onnx_path: Path,
    plots: bool = True,
) -> dict[str, Any]:
    settings = load_settings(params).drift
    profile = load_profile(profile_path)
    if logs:
        window = read_logs(logs, settings.window)
    else:
        if not card_path.is_file() or not onnx_path.is_file():
            raise DriftInputError(
                f"{card_path} and {onnx_path} are needed to predict classes "
                "for an image folder; run `dvc pull` or `make fetch-model`."
            )
        window = read_images(data, read_json(card_path), onnx_session(onnx_path))
    result = detect(profile, window, settings)
    write_report(result, profile, window, out_dir, plots)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.monitor.drift", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--logs", help="folder holding predictions.jsonl (+ rotations)")
    source.add_argument("--data", help="folder of images (class sub-folders allowed)")
    parser.add_argument("--profile", type=Path, default=PROFILE_PATH)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--card", type=Path, default=CARD_PATH)
    parser.add_argument("--model", type=Path, default=ONNX_PATH)
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--trigger-retrain",
        action="store_true",
        help="on drift, start the retraining workflow (gh workflow run)",
    )
    args = parser.parse_args(argv)
    try:
        result = run(
            args.logs,
            args.data,
            args.profile,
            args.out,
            args.params,
            args.card,
            args.model,
            plots=not args.no_plots,
        )
    except (DriftInputError, ProfileError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    drifted = result["drifted_features"] + (
        ["predicted classes"] if result["prediction_drift"] else []
    )
    print(
        f"monitor: {result['window']['n']} records from {result['window']['source']}: "
        + (f"DRIFT in {', '.join(drifted)}" if result["drift"] else "no drift")
        + f"; report {args.out / 'drift.md'}"
    )
    if result["drift"] and args.trigger_retrain:
        dispatch_retraining(result)
        print("monitor: retraining workflow started (gh workflow run retrain.yml)")
    return 1 if result["drift"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
