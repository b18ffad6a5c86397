"""`make monitor`: compare a window of production data with the training reference profile.

Usage:
    python -m mlproject.monitor.drift --logs /var/log/model     # prediction logs (JSONL)
    python -m mlproject.monitor.drift --data path/to/inputs     # an image folder, a CSV/Parquet
    python -m mlproject.monitor.drift --logs DIR --actuals actuals.csv   # + live quality

Per feature (image summaries, a table's columns), with a test fitted to its type:
numeric: the two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) of the values present
against the profile's training sample, and the population stability index over its quantile
bins; categorical: Pearson's chi-square test of the window's frequencies against training's
(categories never seen in training pooled in one bucket) with the Jensen-Shannon distance
(base 2) as effect size, and the share of new categories (counted and listed). The per-feature
p-values are corrected for their number (Benjamini-Hochberg by default, or Bonferroni), and
every feature reports the change of its missing rate. Predictions, as the profile's task
summarized them: a classifier's classes by chi-square against the test split's predicted-class
shares, with the total variation distance as effect size; a regression model's predicted value
by the numeric tests against the test split's predictions (KS and PSI), its p-value corrected
together with the features'. With --actuals (a CSV `id,actual`), live quality: the logged
predictions whose ground truth is known, scored beside the test split (mlproject.monitor.quality).
Thresholds come from `monitor.drift` in params.yaml. Writes drift.json, drift.md and plots to
--out, then exits 0 (no drift), 1 (drift) or 2 (bad input: the message names the file, line or
key).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cli import entry_point
from ..core.io import read_json
from ..core.paths import EVAL_METRICS, MONITOR_REPORTS
from ..core.proc import run as run_command
from .drift_report import prediction_subject, write_report
from .profile import (
    CARD_PATH,
    CATEGORICAL,
    ONNX_PATH,
    PROFILE_PATH,
    bin_shares,
    load_profile,
    monitoring,
    onnx_session,
)
from .quality import live_quality
from .settings import DriftSettings, load_settings
from .window import (  # noqa: F401  (the names other code imports from here)
    LOG_NAME,
    DriftInputError,
    Window,
    read_inputs,
    read_logs,
)

OUT_DIR = MONITOR_REPORTS
# Added to every bin share so that an empty bin does not make PSI infinite.
PSI_EPSILON = 1e-4
# Sample sizes above which the exact KS distribution is too slow to compute; asymptotic is accurate.
KS_EXACT_MAX = 1_000_000
NEW = "(new)"  # the bucket of categories never seen in training
PREDICTED = "(predicted)"  # a numeric prediction's name in the corrected family of p-values
LISTED_NEW = 20  # new categories listed by name per column (all are counted)


# ------------------------------------------------------------------------------ statistics


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """Population stability index: sum (cur - ref) * ln(cur / ref) over bins."""
    ref = np.asarray(reference_shares) + PSI_EPSILON
    cur = np.asarray(current_shares) + PSI_EPSILON
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (0: same shares, 1: disjoint), as Evidently reports."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p, q, base=2))


def adjust(pvalues: list[float], method: str) -> list[float]:
    """P-values corrected for testing many features at once."""
    if not pvalues or method == "none":
        return list(pvalues)
    p = np.asarray(pvalues, dtype=np.float64)
    if method == "bonferroni":
        return [float(v) for v in np.minimum(p * len(p), 1.0)]
    from scipy.stats import false_discovery_control

    return [float(v) for v in false_discovery_control(p, method="bh")]


def missing_rates(ref: dict[str, Any], missing: int, n: int) -> dict[str, float]:
    current = missing / n if n else 0.0
    reference = float(ref.get("missing_rate", 0.0))
    return {
        "missing_rate_reference": reference,
        "missing_rate_current": current,
        "missing_shift": current - reference,
    }


def numeric_drift(ref: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """KS and PSI of the values present; the verdict comes later (after the correction)."""
    from scipy.stats import ks_2samp

    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    out: dict[str, Any] = {"type": "numeric", "test": "ks"}
    if len(present):
        sample = np.asarray(ref["sample"], dtype=np.float64)
        method = "auto" if len(sample) * len(present) <= KS_EXACT_MAX else "asymp"
        ks = ks_2samp(sample, present, method=method)
        edges = np.asarray(ref["bin_edges"], dtype=np.float64)
        out |= {
            "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
            "psi": psi(np.asarray(ref["bin_shares"]), bin_shares(present, edges)),
            "reference_mean": ref["mean"],
            "current_mean": float(present.mean()),
        }
    else:  # every value missing: only the missing rate speaks
        out |= {
            "ks_statistic": None,
            "ks_pvalue": None,
            "psi": None,
            "reference_mean": ref["mean"],
            "current_mean": None,
        }
    out["pvalue"] = out["ks_pvalue"]
    return out | missing_rates(ref, len(values) - len(present), len(values))


def categorical_drift(ref: dict[str, Any], values: np.ndarray) -> dict[str, Any]:
    """Chi-square and Jensen-Shannon over the training categories plus a bucket for new ones."""
    from scipy.stats import chisquare

    values = np.asarray(values, dtype=object)
    present = [v for v in values.tolist() if v != ""]
    categories = list(ref["categories"])
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 1, dtype=np.int64)
    new: Counter = Counter()
    for value in present:
        i = index.get(value)
        if i is None:
            new[value] += 1
            counts[-1] += 1
        else:
            counts[i] += 1
    n = int(counts.sum())
    ref_counts = np.append(np.asarray(ref["counts"], dtype=np.float64), 0.0)
    # Half a count on every cell keeps categories absent from training (or the new bucket)
    # testable, as for the predicted classes.
    expected = (ref_counts + 0.5) / (ref_counts + 0.5).sum()
    test = chisquare(counts, expected * n) if n else None
    ref_shares = ref_counts / max(ref_counts.sum(), 1.0)
    cur_shares = counts / max(n, 1)
    return {
        "type": CATEGORICAL,
        "test": "chi-square",
        "chi2_statistic": float(test.statistic) if test else None,
        "chi2_pvalue": float(test.pvalue) if test else None,
        "pvalue": float(test.pvalue) if test else None,
        "jensen_shannon": jensen_shannon(ref_shares, cur_shares) if n else None,
        "categories": categories + [NEW],
        "reference_shares": [float(v) for v in ref_shares],
        "current_shares": [float(v) for v in cur_shares],
        "new_categories": {
            "count": len(new),
            "rows": int(sum(new.values())),
            "share": float(sum(new.values()) / n) if n else 0.0,
            "values": dict(new.most_common(LISTED_NEW)),
        },
    } | missing_rates(ref, len(values) - len(present), len(values))


def verdict(r: dict[str, Any], s: DriftSettings) -> list[str]:
    """Why a feature drifts (empty: it does not), from its corrected p-value and effect sizes."""
    reasons = []
    p = r["pvalue_adjusted"]
    if r["type"] == CATEGORICAL:
        if p is not None and p < s.chi2_pvalue and r["jensen_shannon"] >= s.jensen_shannon:
            reasons.append("frequencies")
        if r["new_categories"]["share"] >= s.new_category_share:
            reasons.append("new categories")
    else:
        if p is not None and p < s.ks_pvalue and r["ks_statistic"] >= s.ks_statistic:
            reasons.append("distribution (KS)")
        if r["psi"] is not None and r["psi"] >= s.psi:
            reasons.append("distribution (PSI)")
    if abs(r["missing_shift"]) >= s.missing_shift:
        reasons.append("missing rate")
    return reasons


def features_drift(
    profile: dict[str, Any], window: Window, s: DriftSettings, also: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Every profile feature's tests, corrected p-values and verdict; `also` ({name: result})
    joins the family the correction runs over and gets its verdict too (a numeric prediction)."""
    results = {}
    for i, (name, ref) in enumerate(profile["features"].items()):
        values = window.column(i, name)
        if ref.get("type") == CATEGORICAL:
            results[name] = categorical_drift(ref, values)
        else:
            results[name] = numeric_drift(ref, values)
    family = results | (also or {})
    tested = [name for name, r in family.items() if r["pvalue"] is not None]
    adjusted = adjust([family[name]["pvalue"] for name in tested], s.correction)
    for r in family.values():
        r["pvalue_adjusted"] = None
    for name, p in zip(tested, adjusted, strict=True):
        family[name]["pvalue_adjusted"] = p
    for r in family.values():
        r["reasons"] = verdict(r, s)
        r["drift"] = bool(r["reasons"])
    return results


def numeric_prediction_drift(ref: dict[str, Any], predicted: list[float]) -> dict[str, Any]:
    """A regression model's predicted values against the test split's, tested as a numeric
    feature is (KS on every test prediction, PSI on its quantile bins); the verdict comes with
    the features' correction. Adds the window's quantiles beside the reference's."""
    values = np.asarray(predicted, dtype=np.float64)
    out = numeric_drift(ref, values)
    present = values[~np.isnan(values)]
    out["reference_quantiles"] = dict(ref.get("quantiles", {}))
    out["current_quantiles"] = {
        key: float(np.quantile(present, int(key[1:]) / 100)) if len(present) else None
        for key in ref.get("quantiles", {})
    }
    return out


def prediction_drift(ref: dict[str, Any], predicted: list[str], s: DriftSettings) -> dict[str, Any]:
    """Predicted classes against the test split's shares: chi-square and total variation."""
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
        "type": "classes",
        "test": "chi-square",
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


def detect(
    profile: dict[str, Any],
    window: Window,
    s: DriftSettings,
    quality: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The drift verdict for a window against the profile (a JSON-ready dict); `quality`, the
    live quality of mlproject.monitor.quality, goes in as it is."""
    n = window.n
    if n < s.min_records:
        raise DriftInputError(
            f"{window.source}: {n} records, fewer than "
            f"monitor.drift.min_records = {s.min_records}; wait for more data."
        )
    ref = profile["predicted"]
    if ref.get("type") == "numeric":  # a predicted number: one more numeric column
        predictions = numeric_prediction_drift(ref, window.predicted)
        features = features_drift(profile, window, s, also={PREDICTED: predictions})
    else:
        predictions = prediction_drift(ref, window.predicted, s)
        features = features_drift(profile, window, s)
    drifted = [name for name, r in features.items() if r["drift"]]
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
            "unit": monitoring(profile.get("input")).UNIT,
            "n_train": next(iter(profile["features"].values()))["n"],
            "n_test": profile["predicted"]["n"],
        },
        "thresholds": vars(s).copy(),
        "features": features,
        "predictions": predictions,
        "quality": quality,
    }


def drifted_names(result: dict[str, Any]) -> list[str]:
    """The drifted features, then the predictions ("predicted classes", "predicted values")."""
    subject = prediction_subject(result["predictions"])
    return result["drifted_features"] + ([subject] if result["prediction_drift"] else [])


def dispatch_retraining(result: dict[str, Any], workflow: str = "retrain.yml") -> None:
    """Start the retraining workflow with the GitHub CLI (needs GH_TOKEN with actions: write)."""
    reason = "drift: " + ", ".join(drifted_names(result))
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
    actuals: str | Path | None = None,
    metrics_path: Path = EVAL_METRICS,
) -> dict[str, Any]:
    settings = load_settings(params).drift
    profile = load_profile(profile_path)
    if actuals and not logs:
        raise DriftInputError(
            f"--actuals {actuals}: ground truth joins the prediction logs' ids; give --logs."
        )
    if logs:
        window = read_logs(logs, settings.window, profile.get("input"), profile.get("task"))
    else:
        if not card_path.is_file() or not onnx_path.is_file():
            raise DriftInputError(
                f"{card_path} and {onnx_path} are needed to predict classes "
                "for a folder or file of inputs; run `dvc pull` or `make fetch-model`."
            )
        window = read_inputs(data, read_json(card_path), onnx_session(onnx_path))
    quality = None
    if actuals:
        classes = profile["predicted"].get("classes")
        quality = live_quality(actuals, window, profile.get("task"), classes, metrics_path)
    result = detect(profile, window, settings, quality)
    write_report(result, profile, window, out_dir, plots)
    return result


@entry_point(error_code=2)  # exit 1 means "drift"
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.monitor.drift", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--logs", help="folder holding predictions.jsonl (+ rotations)")
    source.add_argument(
        "--data",
        help="inputs of the model's kind: a folder of images (class sub-folders allowed), "
        "a CSV/Parquet file of rows or a folder of them",
    )
    parser.add_argument("--profile", type=Path, default=PROFILE_PATH)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--card", type=Path, default=CARD_PATH)
    parser.add_argument("--model", type=Path, default=ONNX_PATH)
    parser.add_argument(
        "--actuals",
        help="a CSV `id,actual` of ground truth for logged predictions (with --logs): live "
        "quality beside the test split's",
    )
    parser.add_argument(
        "--metrics", type=Path, default=EVAL_METRICS, help="the test split's metrics"
    )
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
        actuals=args.actuals,
        metrics_path=args.metrics,
    )
    drifted = drifted_names(result)
    print(
        f"monitor: {result['window']['n']} records from {result['window']['source']}: "
        + (f"DRIFT in {', '.join(drifted)}" if result["drift"] else "no drift")
        + f"; report {args.out / 'drift.md'}"
    )
    if result["quality"]:
        q = result["quality"]
        live = ", ".join(f"{k} {v:.4g}" for k, v in q["metrics"].items())
        print(
            f"monitor: live quality on {q['matched']} of {q['n_actuals']} actuals "
            f"({q['unknown']} unknown ids): {live}"
        )
    if result["drift"] and args.trigger_retrain:
        dispatch_retraining(result)
        print("monitor: retraining workflow started (gh workflow run retrain.yml)")
    return 1 if result["drift"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
