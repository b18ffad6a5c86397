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
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cli import entry_point
from ..core.io import read_json
from ..core.paths import MONITOR_REPORTS
from ..core.proc import run as run_command
from .drift_report import write_report
from .features import FEATURES
from .profile import (
    CARD_PATH,
    ONNX_PATH,
    PROFILE_PATH,
    bin_shares,
    load_profile,
    onnx_session,
)
from .settings import DriftSettings, load_settings
from .window import (  # noqa: F401  (the names other code imports from here)
    IMAGE_EXTENSIONS,
    LOG_NAME,
    DriftInputError,
    Window,
    read_images,
    read_logs,
)

OUT_DIR = MONITOR_REPORTS
# Added to every bin share so that an empty bin does not make PSI infinite.
PSI_EPSILON = 1e-4
# Sample sizes above which the exact KS distribution is too slow to compute; asymptotic is accurate.
KS_EXACT_MAX = 1_000_000


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


def dispatch_retraining(result: dict[str, Any], workflow: str = "retrain.yml") -> None:
    """Start the retraining workflow with the GitHub CLI (needs GH_TOKEN with actions: write)."""
    reason = "drift: " + ", ".join(
        result["drifted_features"] + (["predicted classes"] if result["prediction_drift"] else [])
    )
    run_command(["gh", "workflow", "run", workflow, "--field", f"reason={reason}"], capture=False)


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


@entry_point(error_code=2)  # exit 1 means "drift"
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
