"""Monitoring a regression model (data=diabetes): the predicted value's drift, the alert rules
against the server's predicted-value histogram, and live quality from later ground truth.

Everything runs on the real `regression_repo` model (ONNX by onnxruntime, the prepared Parquet
splits); the prediction logs are written here in the server's record format
(mlproject.serve.predlog) with the `"id"` of the serving contract: the request's id, suffixed
`#<i>` for the i-th item of a multi-item request."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from mlproject import tasks
from mlproject.core.io import read_json
from mlproject.monitor import drift, profile, quality
from mlproject.monitor.alert_rules import reference_rules
from mlproject.monitor.quality import ActualsError, read_actuals
from mlproject.monitor.settings import MonitorSettings
from monitor_table_fixtures import (
    CLASSES,
    Model,
    kind_classes,  # noqa: F401  (fixture)
    log_records,
    rows,
    write_project,
)

from conftest import ROOT, require_tool, run

N_LOGGED = 200  # records per window: above monitor.drift.min_records


@pytest.fixture(scope="module")
def reg(regression_repo, tmp_path_factory):
    """The regression model's card, a reference profile built from it here, and the test
    split's rows with the model's predictions and their true targets."""
    repo = regression_repo
    card = read_json(repo / "models" / "model_card.json")
    out = tmp_path_factory.mktemp("profile") / "reference_profile.json"
    prof = profile.profile(
        MonitorSettings(),
        repo / "outputs" / "prepared",
        repo / "models" / "model.onnx",
        repo / "models" / "model_card.json",
        out,
    )
    session = profile.onnx_session(repo / "models" / "model.onnx")
    kind = profile.monitoring(card["input"])
    predicted = profile.predict(session, kind.feeds(repo / "outputs" / "prepared", "test", card))
    names = [c["name"] for c in card["input"]["columns"]]
    table = pq.read_table(repo / "outputs" / "prepared" / "test.parquet")
    rows = table.select(names).to_pylist()
    return {
        "repo": repo,
        "card": card,
        "profile": prof,
        "profile_path": out,
        "predicted": predicted.reshape(-1).astype(np.float64),
        "rows": rows,
        "actual": np.asarray(table.column(card["input"]["target"]).to_pylist(), dtype=float),
    }


def records(reg, shift: float = 0.0, seed: int = 0) -> list[dict]:
    """N_LOGGED records: every test row once (ids `t-<row>`), then rows drawn again in requests
    of two items (ids `b-<k>#0`, `b-<k>#1`); predictions the model's, plus `shift`."""
    rng = np.random.default_rng(seed)
    n = len(reg["rows"])
    order = list(range(n)) + rng.integers(0, n, N_LOGGED - n).tolist()
    out = []
    for i, row in enumerate(order):
        extra = i - n
        record_id = f"t-{row}" if extra < 0 else f"b-{extra // 2}#{extra % 2}"
        out.append(
            {
                "ts": 1.7e9 + i,
                "id": record_id,
                "model": reg["card"]["name"],
                "model_sha256": reg["card"]["sha256"],
                "route": "predict",
                "features": reg["rows"][row],
                "predicted": round(float(reg["predicted"][row]) + shift, 6),
            }
        )
    return out


def write_logs(folder: Path, recs: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    half = len(recs) // 2  # the older half rotated to predictions.jsonl.1
    (folder / "predictions.jsonl.1").write_text("".join(json.dumps(r) + "\n" for r in recs[:half]))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[half:]))
    return folder


def cli(reg, *args) -> int:
    repo = reg["repo"]
    return drift.main(
        [
            *args,
            "--profile",
            str(reg["profile_path"]),
            "--params",
            str(repo / "params.yaml"),
            "--card",
            str(repo / "models" / "model_card.json"),
            "--model",
            str(repo / "models" / "model.onnx"),
            "--metrics",
            str(repo / "reports" / "eval" / "metrics.json"),
        ]
    )


# ------------------------------------------------------------------------------ drift


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_the_profile_summarizes_predicted_values_as_a_numeric_column(reg):
    predicted, want = reg["profile"]["predicted"], np.sort(reg["predicted"])
    assert reg["profile"]["task"] == "regression"
    assert predicted["type"] == "numeric"
    assert predicted["n"] == len(want) == reg["card"]["metrics"]["test"]["n_test"]
    assert predicted["sample"] == pytest.approx(want.tolist(), abs=1e-6)
    assert predicted["quantiles"]["p50"] == pytest.approx(np.median(want))
    assert len(predicted["bin_shares"]) == len(predicted["bin_edges"]) + 1
    assert sum(predicted["bin_shares"]) == pytest.approx(1.0)


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_shifted_predictions_drift_and_the_models_own_do_not(reg, tmp_path):
    settings = MonitorSettings().drift
    std = reg["profile"]["predicted"]["std"]
    results = {}
    for name, shift in (("same", 0.0), ("shifted", std)):
        logs = write_logs(tmp_path / name, records(reg, shift))
        window = drift.read_logs(logs, 10_000, reg["profile"]["input"], "regression")
        results[name] = drift.detect(reg["profile"], window, settings)
    same, shifted = results["same"], results["shifted"]
    assert same["prediction_drift"] is False, same["predictions"]
    assert shifted["prediction_drift"] is True and shifted["drift"] is True
    p = shifted["predictions"]
    assert p["type"] == "numeric" and p["test"] == "ks"
    assert "distribution (KS)" in p["reasons"]
    assert p["current_mean"] - p["reference_mean"] == pytest.approx(
        same["predictions"]["current_mean"] - p["reference_mean"] + std, abs=1e-5
    )
    # Only the predictions moved: the inputs' verdicts are the same.
    assert shifted["drifted_features"] == same["drifted_features"]
    # Corrected with the features (Benjamini-Hochberg over the 10 columns and the prediction).
    raw = [r["pvalue"] for r in shifted["features"].values()] + [p["pvalue"]]
    rank = sorted(raw).index(p["pvalue"]) + 1
    assert p["pvalue_adjusted"] >= p["pvalue"] * len(raw) / rank * (1 - 1e-9)
    assert p["pvalue_adjusted"] == pytest.approx(
        min(1.0, min(q * len(raw) / (sorted(raw).index(q) + 1) for q in raw if q >= p["pvalue"]))
    )


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_cli_reports_a_predicted_number(reg, tmp_path, capsys):
    std = reg["profile"]["predicted"]["std"]
    logs = write_logs(tmp_path / "logs", records(reg, shift=std))
    out = tmp_path / "report"
    assert cli(reg, "--logs", str(logs), "--out", str(out)) == 1
    assert "predicted values" in capsys.readouterr().out
    report = read_json(out / "drift.json")
    assert report["predictions"]["type"] == "numeric" and report["quality"] is None
    md = (out / "drift.md").read_text()
    assert "predicted values of 67 test rows" in md
    assert "Predicted values: KS statistic" in md and "| class |" not in md
    assert "| p50 |" in md and "![Predicted values](predicted.png)" in md
    assert (out / "predicted.png").stat().st_size > 0 and not (out / "classes.png").exists()


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_a_logged_prediction_that_is_not_a_number_is_named(reg, tmp_path, capsys):
    recs = records(reg)
    recs[3]["predicted"] = "high"
    out = tmp_path / "report"
    assert cli(reg, "--logs", str(write_logs(tmp_path / "logs", recs)), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "predictions.jsonl.1:4" in err and "'high'" in err
    assert not out.exists()


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_null_predictions_count_as_missing_and_are_not_scored(reg, tmp_path):
    """The server logs a non-finite prediction (a broken model) as null: drift sees the
    predicted value's missing rate move, live quality scores only the numbers."""
    recs = records(reg)
    for r in recs[:60]:
        r["predicted"] = None
    logs = write_logs(tmp_path / "logs", recs)
    window = drift.read_logs(logs, 10_000, reg["profile"]["input"], "regression")
    p = drift.detect(reg["profile"], window, MonitorSettings().drift)["predictions"]
    assert p["missing_rate_current"] == pytest.approx(60 / N_LOGGED)
    assert "missing rate" in p["reasons"] and p["drift"] is True
    truth = [(f"t-{i}", repr(float(a))) for i, a in enumerate(reg["actual"])]
    q = quality.live_quality(
        write_actuals(tmp_path / "actuals.csv", truth),
        window,
        "regression",
        None,
        tmp_path / "absent.json",
    )
    assert (q["matched"], q["without_prediction"], q["test"]) == (67, 60, None)
    err = [recs[i]["predicted"] - reg["actual"][i] for i in range(60, 67)]
    assert q["metrics"]["rmse"] == pytest.approx(math.sqrt(np.mean(np.square(err))))


# ------------------------------------------------------------------------------ alert rules


def promtool_test(tmp_path: Path, prof: dict, tests: list[dict]) -> subprocess.CompletedProcess:
    promtool = require_tool("promtool", "Debian: apt-get install prometheus")
    (tmp_path / "reference.rules.yml").write_text(reference_rules(prof))
    (tmp_path / "rules.yml").write_text((ROOT / "deploy/prometheus/rules.yml").read_text())
    checked = subprocess.run(
        [promtool, "check", "rules", "rules.yml", "reference.rules.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    body = {
        "rule_files": ["rules.yml", "reference.rules.yml"],
        "evaluation_interval": "1m",
        "tests": tests,
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(body, sort_keys=False))
    return subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
    )


def histogram(bounds: list[float], per_minute: list[int]) -> list[dict]:
    """The server's mlserve_predicted_value histogram: cumulative counts per bucket bound
    (+Inf last), `per_minute` new observations per minute in each."""
    cumulative = np.cumsum(per_minute).tolist()
    les = [repr(float(b)) for b in bounds] + ["+Inf"]
    series = [
        {
            "series": f'mlserve_predicted_value_bucket{{api="predict",le="{le}"}}',
            "values": f"0+{n}x90",
        }
        for le, n in zip(les, cumulative, strict=True)
    ]
    series.append(
        {
            "series": 'mlserve_predicted_value_count{api="predict"}',
            "values": f"0+{cumulative[-1]}x90",
        }
    )
    return series


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_alert_rules_compare_live_quantiles_with_the_profiles(reg, tmp_path):
    prof = reg["profile"]
    rules = yaml.safe_load(reference_rules(prof))["groups"][0]["rules"]
    names = {r["record"] for r in rules}
    assert names == {
        "mlserve:reference_prediction_quantile",
        "mlserve:reference_prediction_mean",
        "mlserve:reference_prediction_iqr",
    }
    ref = {
        r["labels"]["quantile"]: float(r["expr"])
        for r in rules
        if r["record"] == "mlserve:reference_prediction_quantile"
    }
    iqr = next(float(r["expr"]) for r in rules if r["record"].endswith("iqr"))
    assert iqr == pytest.approx(ref["0.75"] - ref["0.25"], abs=2e-6)
    # The server's buckets (serving contract): the profile's predicted min, p05 ... p95 and
    # max, rounded to 6 significant digits.
    predicted = prof["predicted"]
    values = [predicted["min"], *predicted["quantiles"].values(), predicted["max"]]
    bounds = sorted({float(f"{v:.6g}") for v in values})
    assert len(bounds) == 7

    # Everything above the reference's maximum: histogram_quantile answers the highest finite
    # bound for every quantile, so each moved (max - q) / IQR.
    rule = next(
        r
        for g in yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())["groups"]
        for r in g["rules"]
        if r.get("alert") == "MLServePredictionDistributionDrift"
    )
    expected = []
    for q in ("0.25", "0.5", "0.75"):
        moved = (bounds[-1] - ref[q]) / iqr
        assert moved > 0.5
        words = {"{{ $labels.quantile }}": q, '{{ $value | printf "%.2f" }}': f"{moved:.2f}"}
        annotations = {}
        for key, text in rule["annotations"].items():
            for template, value in words.items():
                text = text.replace(template, value)
            annotations[key] = text
        expected.append(
            {"exp_labels": {"severity": "warn", "quantile": q}, "exp_annotations": annotations}
        )
    tests = [
        {
            "interval": "1m",
            "input_series": histogram(bounds, [0, 0, 0, 0, 0, 0, 0, 100]),
            "alert_rule_test": [
                {
                    "eval_time": "70m",
                    "alertname": "MLServePredictionDistributionDrift",
                    "exp_alerts": expected,
                }
            ],
        },
        {  # the reference's own shares per bucket: live quartiles on the reference's
            "interval": "1m",
            "input_series": histogram(bounds, [0, 5, 20, 25, 25, 20, 5, 0]),
            "promql_expr_test": [
                {
                    "expr": "mlserve:predicted_value_quantile:rate1h",
                    "eval_time": "70m",
                    "exp_samples": [
                        {
                            "labels": f'mlserve:predicted_value_quantile:rate1h{{quantile="{q}"}}',
                            "value": bound,
                        }
                        for q, bound in zip(("0.25", "0.5", "0.75"), bounds[2:5], strict=True)
                    ],
                }
            ],
            "alert_rule_test": [
                {
                    "eval_time": "70m",
                    "alertname": "MLServePredictionDistributionDrift",
                    "exp_alerts": [],
                },
                {"eval_time": "70m", "alertname": "MLServeClassShareDrift", "exp_alerts": []},
            ],
        },
    ]
    result = promtool_test(tmp_path, prof, tests)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ live quality


def write_actuals(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "actual"])
        writer.writerows(rows)
    return path


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_live_rmse_and_mae_from_later_ground_truth(reg, tmp_path):
    """Actuals for every test row the logs hold once (ids t-<row>), for one item of a two-item
    request, and three ids the logs never saw: the join and the metrics, computed by hand."""
    recs = records(reg)
    logs = write_logs(tmp_path / "logs", recs)
    logged = {r["id"]: r["predicted"] for r in recs}
    truth = [(f"t-{i}", repr(float(a))) for i, a in enumerate(reg["actual"])]
    truth += [("b-0#1", "100.5"), ("nope-1", "1"), ("nope-2", "2"), ("nope-3", "3")]
    actuals = write_actuals(tmp_path / "actuals.csv", truth)
    out = tmp_path / "report"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    made = run(
        [
            "make",
            "--no-print-directory",
            "monitor",
            f"LOGS={logs}",
            f"ACTUALS={actuals}",
            f"MONITOR_OUT={out}",
            f"VENV={sys.prefix}",
            "VENV_PREBUILT=1",
        ],
        reg["repo"],
        check=False,
        env=env,
    )
    # make exits 2 whenever its recipe fails, and names the recipe's code: 1 is drift (the test
    # rows' ages drift on PSI against training's), 2 would be bad input.
    assert made.returncode == 0 or "Error 1" in made.stderr, made.stdout + made.stderr
    assert "live quality on 68 of 71 actuals (3 unknown ids)" in made.stdout

    q = read_json(out / "drift.json")["quality"]
    pairs = [(logged[i], float(a)) for i, a in truth if i in logged]
    err = np.array([p - a for p, a in pairs])
    assert (q["n_actuals"], q["matched"], q["unknown"]) == (71, 68, 3)
    assert q["unknown_ids"] == ["nope-1", "nope-2", "nope-3"]
    assert q["logged_ids"] == N_LOGGED
    assert q["metrics"]["rmse"] == pytest.approx(math.sqrt(np.mean(err**2)), rel=1e-12)
    assert q["metrics"]["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    test = read_json(reg["repo"] / "reports" / "eval" / "metrics.json")
    assert q["test"] == {"rmse": test["rmse"], "mae": test["mae"]}
    # The test rows alone are the test split: their live rmse is the evaluate stage's.
    alone = np.array([logged[f"t-{i}"] - a for i, a in enumerate(reg["actual"])])
    assert math.sqrt(np.mean(alone**2)) == pytest.approx(test["rmse"], rel=1e-5)
    md = (out / "drift.md").read_text()
    assert "Live quality: 68 of 71 actuals matched a logged prediction; 3 unknown" in md
    assert f"| rmse | {q['metrics']['rmse']:.4g} | {test['rmse']:.4g} |" in md


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_the_servers_own_log_joins_with_ground_truth(reg, tmp_path):
    """The real app (in-process) logs the test rows, two per /predict request with an
    X-Request-ID; actuals keyed `<request id>#<i>` join every one, and the live rmse and mae
    are the evaluate stage's (the same rows, the same model)."""
    from starlette.testclient import TestClient

    from mlproject.serve.app import create_app
    from mlproject.serve.settings import Settings

    repo, logs = reg["repo"], tmp_path / "logs"
    settings = Settings(
        model=repo / "models" / "model.onnx",
        card=repo / "models" / "model_card.json",
        reference_profile=reg["profile_path"],
        prediction_log=logs,
    )
    truth = []
    with TestClient(create_app(settings)) as client:
        for k in range(2):  # twice over: 134 records, above min_records
            for i in range(0, len(reg["rows"]), 2):
                chunk = reg["rows"][i : i + 2]
                rid = f"r{k}-{i}"
                r = client.post("/predict", json={"rows": chunk}, headers={"X-Request-ID": rid})
                assert r.is_success, r.text
                if k == 0:
                    ids = [f"{rid}#{j}" for j in range(len(chunk))] if len(chunk) > 1 else [rid]
                    truth += [(key, repr(float(reg["actual"][i + j]))) for j, key in enumerate(ids)]
    actuals = write_actuals(tmp_path / "actuals.csv", truth)
    window = drift.read_logs(logs, 10_000, reg["profile"]["input"], "regression")
    q = quality.live_quality(
        actuals, window, "regression", None, repo / "reports" / "eval" / "metrics.json"
    )
    assert (q["matched"], q["unknown"], q["logged_ids"]) == (67, 0, 134)
    assert q["metrics"] == pytest.approx(q["test"], rel=1e-5)


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([("t-1", "12")], ["id", "value"], "no column 'actual' (columns: id, value)"),
        ([("t-1", "12"), ("t-2", "twelve")], None, "row 3: 'actual' 'twelve' is not a finite"),
        ([("t-1", "12"), ("t-2", "3"), ("t-1", "4")], None, "row 4: id 't-1' repeats row 2"),
        ([("", "12")], None, "row 2: 'id' is empty"),
        ([], None, "no rows after the header"),
        ([("x-1", "12")], None, "none of its 1 ids is in the prediction logs"),
    ],
)
@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_a_bad_actuals_file_is_named_and_nothing_is_written(
    reg, tmp_path, capsys, rows, header, message
):
    logs = write_logs(tmp_path / "logs", records(reg))
    actuals = tmp_path / "actuals.csv"
    with open(actuals, "w", newline="") as fh:
        csv.writer(fh).writerows([header or ["id", "actual"], *rows])
    out = tmp_path / "report"
    assert cli(reg, "--logs", str(logs), "--actuals", str(actuals), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert str(actuals) in err and message in err, err
    assert not out.exists()


@pytest.mark.slow  # the regression_repo fixture: a dvc repro of the diabetes demo
def test_actuals_need_logs_with_ids(reg, tmp_path, capsys):
    recs = records(reg)
    for r in recs:
        del r["id"]
    logs = write_logs(tmp_path / "logs", recs)
    actuals = write_actuals(tmp_path / "actuals.csv", [("t-1", "12")])
    out = tmp_path / "report"
    assert cli(reg, "--logs", str(logs), "--actuals", str(actuals), "--out", str(out)) == 2
    assert "no logged record carries an 'id'" in capsys.readouterr().err
    assert cli(reg, "--data", "x.csv", "--actuals", str(actuals), "--out", str(out)) == 2
    assert "give --logs" in capsys.readouterr().err
    assert not out.exists()


def test_a_classifier_gets_live_accuracy(tmp_path, capsys, kind_classes):  # noqa: F811
    """The same join for a table classifier (a small ONNX model made here): `actual` is a class
    name; half the actuals agree with the logged class, so live accuracy is 0.5."""
    made = write_project(tmp_path)
    prof_path = tmp_path / "models" / "reference_profile.json"
    profile.profile(MonitorSettings(), made["prepared"], made["onnx"], made["card_path"], prof_path)
    lines = log_records(made["card"], rows(7, 200), Model(made["onnx"], made["spec"]))
    recs = [json.loads(line) | {"id": f"req-{i}"} for i, line in enumerate(lines)]
    logs = write_logs(tmp_path / "logs", recs)
    truth = [
        (r["id"], r["predicted"] if i % 2 == 0 else next(c for c in CLASSES if c != r["predicted"]))
        for i, r in enumerate(recs[:100])
    ]
    actuals = write_actuals(tmp_path / "actuals.csv", truth)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.9, "f1_macro": 0.8, "loss": 0.3}))
    out = tmp_path / "report"
    code = drift.main(
        ["--logs", str(logs), "--actuals", str(actuals), "--out", str(out), "--no-plots"]
        + ["--profile", str(prof_path), "--params", str(tmp_path / "params.yaml")]
        + ["--card", str(made["card_path"]), "--model", str(made["onnx"])]
        + ["--metrics", str(metrics)]
    )
    assert code in (0, 1), capsys.readouterr().err
    q = read_json(out / "drift.json")["quality"]
    assert (q["matched"], q["unknown"]) == (100, 0)
    assert q["metrics"]["accuracy"] == pytest.approx(0.5)
    assert q["test"] == {"accuracy": 0.9, "f1_macro": 0.8}
    assert "| accuracy | 0.5 | 0.9 |" in (out / "drift.md").read_text()


def test_classification_scores_class_names():
    """For a classifier `actual` is a class name: accuracy and macro F1 over the classes met."""
    task = tasks.get("classification")
    live = task.live_metrics(["a", "b", "b", "c"], ["a", "b", "c", "c"], ["a", "b", "c", "d"])
    assert live["accuracy"] == pytest.approx(0.75)
    assert live["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)  # d never met
    assert task.parse_actual(" b ") == "b"
    with pytest.raises(ValueError, match="class name"):
        task.parse_actual("  ")


def test_read_actuals_reads_what_the_task_reads(tmp_path):
    path = write_actuals(tmp_path / "a.csv", [("r1#0", "3.5"), ("r1#1", "-2")])
    assert read_actuals(path, "regression") == {"r1#0": 3.5, "r1#1": -2.0}
    assert read_actuals(path, "classification") == {"r1#0": "3.5", "r1#1": "-2"}
    with pytest.raises(ActualsError, match="row 2: 'actual' 'nan' is not a finite number"):
        read_actuals(write_actuals(tmp_path / "b.csv", [("x", "nan")]), "regression")
