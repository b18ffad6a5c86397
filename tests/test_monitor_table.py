"""Monitoring a table's model: the reference profile per column, drift per column on logged
traffic whose drift is known, the report, the CLI's exit codes and errors, the alert rules.

The model, splits and card are made here (monitor_table_fixtures) with real Parquet files, a real
ONNX graph run by onnxruntime and prediction logs in the server's format (contract 6)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlproject.core.io import read_json
from mlproject.monitor import drift, profile
from mlproject.monitor.alert_rules import reference_rules
from mlproject.monitor.settings import MonitorSettings, SettingsError, from_dict
from monitor_table_fixtures import (
    CATEGORIES,
    CLASSES,
    Model,
    kind_classes,  # noqa: F401  (fixture)
    log_records,
    rows,
    write_project,
)

from conftest import require_tool

N_WINDOW = 1000


@pytest.fixture
def project(tmp_path, kind_classes):  # noqa: F811
    made = write_project(tmp_path)
    made["root"] = tmp_path
    made["model"] = Model(made["onnx"], made["spec"])
    made["profile"] = profile.profile(
        MonitorSettings(),
        made["prepared"],
        made["onnx"],
        made["card_path"],
        tmp_path / "models" / "reference_profile.json",
    )
    made["profile_path"] = tmp_path / "models" / "reference_profile.json"
    return made


def write_logs(folder: Path, project, frame, files: int = 2) -> Path:
    """Logged traffic over predictions.jsonl and its rotations (.1 older than the current)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = log_records(project["card"], frame, project["model"])
    names = ["predictions.jsonl"] + [f"predictions.jsonl.{k}" for k in range(1, files)]
    for name, part in zip(
        names, reversed(np.array_split(np.arange(len(lines)), files)), strict=True
    ):
        (folder / name).write_text("".join(lines[i] + "\n" for i in part))
    return folder


def check(project, folder: Path, settings=None) -> dict:
    window = drift.read_logs(folder, 10_000, project["profile"]["input"])
    return drift.detect(project["profile"], window, (settings or MonitorSettings()).drift)


# ------------------------------------------------------------------------------ the profile


def test_profile_holds_each_columns_distribution(project):
    prof, train = project["profile"], project["splits"]["train"]
    assert prof["input"] == project["card"]["input"]
    assert list(prof["features"]) == ["x", "y", "noise", "color"]
    for name in ("x", "y", "noise"):
        summary, values = prof["features"][name], train[name].to_numpy()
        present = values[~np.isnan(values)]
        assert summary["type"] == "numeric"
        assert summary["n"] == len(train)
        assert summary["missing_rate"] == pytest.approx(np.isnan(values).mean())
        assert summary["mean"] == pytest.approx(present.mean())
        assert summary["std"] == pytest.approx(present.std())
        assert len(summary["sample"]) == len(present)  # below sample_size: every value
        assert len(summary["bin_shares"]) == len(summary["bin_edges"]) + 1
        assert sum(summary["bin_shares"]) == pytest.approx(1.0)
    color = prof["features"]["color"]
    assert color["type"] == "categorical"
    assert color["categories"] == CATEGORIES
    expected = train["color"].value_counts()
    assert color["counts"] == [int(expected[c]) for c in CATEGORIES]
    assert color["missing_rate"] == pytest.approx(train["color"].isna().mean())
    assert sum(color["shares"]) == pytest.approx(1.0)
    predicted = project["model"](project["splits"]["test"])
    assert prof["predicted"]["classes"] == CLASSES
    assert prof["predicted"]["counts"] == np.bincount(predicted, minlength=3).tolist()


def test_profile_stage_is_deterministic_and_writes_the_alert_reference(project, monkeypatch):
    monkeypatch.chdir(project["root"])
    first = project["profile_path"].read_bytes()
    assert profile.main() == 0
    assert project["profile_path"].read_bytes() == first
    rules = yaml.safe_load(Path("deploy/prometheus/reference.rules.yml").read_text())
    shares = {r["labels"]["class_name"]: float(r["expr"]) for r in rules["groups"][0]["rules"]}
    assert list(shares) == CLASSES
    reference = dict(zip(CLASSES, project["profile"]["predicted"]["shares"], strict=True))
    assert shares == pytest.approx(reference, abs=1e-6)


def test_a_sample_is_drawn_when_the_split_is_large(project):
    settings = from_dict({"profile": {"sample_size": 100}})
    kind = profile.monitoring(project["spec"])
    reference = kind.reference(project["prepared"], project["spec"])
    made = profile.build_profile(project["card"], reference, np.zeros(3, dtype=int), settings)
    again = profile.build_profile(project["card"], reference, np.zeros(3, dtype=int), settings)
    assert len(made["features"]["x"]["sample"]) == 100
    assert made == again  # seeded


# ------------------------------------------------------------------------------ drift on logs


@pytest.mark.parametrize(
    ("name", "window", "drifted", "reason"),
    [
        ("no drift", {}, [], None),
        ("shifted numeric column", {"shift": 1.0}, ["x"], "distribution (KS)"),
        ("new category", {"new_share": 0.2}, ["color"], "new categories"),
        ("more missing values", {"y_missing": 0.3}, ["y"], "missing rate"),
    ],
)
def test_drift_per_column_on_logged_traffic(project, tmp_path, name, window, drifted, reason):
    logs = write_logs(tmp_path / "logs", project, rows(7, N_WINDOW, **window))
    result = check(project, logs)
    assert result["drifted_features"] == drifted, {
        k: (v["reasons"], v["pvalue_adjusted"]) for k, v in result["features"].items()
    }
    assert result["input_drift"] is bool(drifted)
    assert result["window"]["n"] == N_WINDOW
    for column, r in result["features"].items():
        assert r["type"] == ("categorical" if column == "color" else "numeric")
        assert r["test"] == ("chi-square" if column == "color" else "ks")
    if reason:
        assert reason in result["features"][drifted[0]]["reasons"]


def test_new_categories_are_counted_and_listed(project, tmp_path):
    frame = rows(7, N_WINDOW, new_share=0.2)
    frame.loc[:4, "color"] = ["teal", "teal", "ochre", "blue", None]
    logs = write_logs(tmp_path / "logs", project, frame, files=1)
    color = check(project, logs)["features"]["color"]
    new = color["new_categories"]
    purple = int((frame["color"] == "purple").sum())
    assert new["values"] == {"purple": purple, "teal": 2, "ochre": 1}
    assert new["count"] == 3
    assert new["rows"] == purple + 3
    present = int(frame["color"].notna().sum())
    assert new["share"] == pytest.approx((purple + 3) / present)
    assert color["jensen_shannon"] > 0.1
    assert color["categories"][-1] == "(new)"


def test_missing_rate_change_is_reported_for_every_column(project, tmp_path):
    frame = rows(7, N_WINDOW, y_missing=0.3)
    logs = write_logs(tmp_path / "logs", project, frame)
    result = check(project, logs)
    y = result["features"]["y"]
    assert y["missing_rate_current"] == pytest.approx(frame["y"].isna().mean())
    assert y["missing_rate_reference"] == pytest.approx(
        project["profile"]["features"]["y"]["missing_rate"]
    )
    assert y["reasons"] == ["missing rate"]  # the values present did not move
    for r in result["features"].values():
        assert {"missing_rate_reference", "missing_rate_current", "missing_shift"} <= set(r)


def test_a_column_entirely_missing_in_the_window_drifts_on_its_missing_rate(project, tmp_path):
    frame = rows(7, N_WINDOW)
    frame["x"] = np.nan
    result = check(project, write_logs(tmp_path / "logs", project, frame))
    x = result["features"]["x"]
    assert x["ks_pvalue"] is None and x["pvalue_adjusted"] is None
    assert x["reasons"] == ["missing rate"]


def test_the_correction_over_columns_is_set_in_the_config(project, tmp_path):
    logs = write_logs(tmp_path / "logs", project, rows(7, N_WINDOW, shift=0.15))
    results = {
        method: check(project, logs, from_dict({"drift": {"correction": method}}))
        for method in ("none", "bonferroni", "benjamini-hochberg")
    }
    raw = {k: v["pvalue"] for k, v in results["none"]["features"].items()}
    m = len(raw)
    for column, p in raw.items():
        assert results["none"]["features"][column]["pvalue_adjusted"] == p
        bonferroni = results["bonferroni"]["features"][column]["pvalue_adjusted"]
        bh = results["benjamini-hochberg"]["features"][column]["pvalue_adjusted"]
        assert bonferroni == pytest.approx(min(1.0, p * m))
        assert p <= bh <= bonferroni
    with pytest.raises(SettingsError, match="monitor.drift.correction"):
        from_dict({"drift": {"correction": "holm"}})
    with pytest.raises(SettingsError, match="monitor.drift.jensen_shannon"):
        from_dict({"drift": {"jensen_shannon": 0}})
    with pytest.raises(SettingsError, match="monitor.drift.missing_shift"):
        from_dict({"drift": {"missing_shift": "a lot"}})


def test_thresholds_come_from_the_config(project, tmp_path):
    logs = write_logs(tmp_path / "logs", project, rows(7, N_WINDOW, new_share=0.2, y_missing=0.3))
    assert check(project, logs)["drifted_features"] == ["y", "color"]
    lax = from_dict(
        {"drift": {"missing_shift": 0.5, "new_category_share": 0.5, "jensen_shannon": 0.9}}
    )
    assert check(project, logs, lax)["drifted_features"] == []


def test_prediction_drift_is_measured_on_a_tables_classes(project, tmp_path):
    frame = rows(7, N_WINDOW, shift=2.0)  # x decides between a and b
    result = check(project, write_logs(tmp_path / "logs", project, frame))
    assert result["prediction_drift"] is True
    assert result["predictions"]["classes"] == CLASSES
    assert result["predictions"]["total_variation"] > 0.3


# ------------------------------------------------------------------------------ the CLI


def cli(project, *args) -> int:
    return drift.main(
        [
            *args,
            "--profile",
            str(project["profile_path"]),
            "--params",
            str(project["root"] / "params.yaml"),  # absent: the defaults
            "--card",
            str(project["card_path"]),
            "--model",
            str(project["onnx"]),
        ]
    )


@pytest.mark.slow  # the monitor's command on a project: seconds
def test_cli_on_logs_writes_a_row_per_column(project, tmp_path, capsys):
    out = tmp_path / "report"
    same = write_logs(tmp_path / "same", project, rows(7, N_WINDOW), files=3)
    assert cli(project, "--logs", str(same), "--out", str(out)) == 0
    report = read_json(out / "drift.json")
    assert report["drift"] is False
    assert report["reference"]["unit"] == "rows"
    md = (out / "drift.md").read_text()
    assert "No drift" in md and "800 training rows" in md
    for column in ("x", "y", "noise", "color"):
        assert sum(line.startswith(f"| {column} |") for line in md.splitlines()) == 1
    assert (out / "features.png").stat().st_size > 0
    assert (out / "classes.png").stat().st_size > 0

    new = write_logs(tmp_path / "new", project, rows(7, N_WINDOW, new_share=0.2))
    assert cli(project, "--logs", str(new), "--out", str(out), "--no-plots") == 1
    md = (out / "drift.md").read_text()
    assert "Drift detected" in md
    assert "- color: `purple`" in md
    assert "| color | categorical | chi-square |" in md
    assert "DRIFT in color" in capsys.readouterr().out


def test_cli_rejects_a_bad_logged_row_naming_the_line_and_column(project, tmp_path, capsys):
    logs = write_logs(tmp_path / "bad", project, rows(7, 200), files=1)
    lines = (logs / "predictions.jsonl").read_text().splitlines()
    record = json.loads(lines[6])
    record["features"]["y"] = "twelve"
    lines[6] = json.dumps(record)
    (logs / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    assert cli(project, "--logs", str(logs), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "predictions.jsonl:7" in err and "'y'" in err and "twelve" in err
    assert not out.exists()  # nothing half-written

    record["features"]["y"] = 1.5
    del record["features"]["color"]
    lines[6] = json.dumps(record)
    (logs / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    assert cli(project, "--logs", str(logs), "--out", str(out)) == 2
    assert "'color'" in capsys.readouterr().err


def test_cli_on_a_csv_file_and_a_folder_of_parquet(project, tmp_path):
    frame = rows(8, 400, shift=1.0).assign(label="a", Name="car")  # extra columns are ignored
    csv = tmp_path / "rows.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "report"
    assert cli(project, "--data", str(csv), "--out", str(out), "--no-plots") == 1
    report = read_json(out / "drift.json")
    assert report["window"]["n"] == 400
    assert report["window"]["source"] == f"rows {csv}"
    assert report["drifted_features"] == ["x"]
    expected = project["model"](frame)
    assert report["predictions"]["current_counts"] == np.bincount(expected, minlength=3).tolist()

    folder = tmp_path / "parquet"
    folder.mkdir()
    frame = rows(9, 600)
    frame.iloc[:250].to_parquet(folder / "part0.parquet", index=False)
    frame.iloc[250:].to_parquet(folder / "part1.parquet", index=False)
    assert cli(project, "--data", str(folder), "--out", str(out), "--no-plots") == 0
    assert read_json(out / "drift.json")["window"]["n"] == 600


def test_cli_rejects_a_bad_csv_naming_the_file_column_and_row(project, tmp_path, capsys):
    frame = rows(8, 200)
    frame["y"] = frame["y"].astype(object)
    frame.loc[9, "y"] = "n/a?"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    out = tmp_path / "report"
    assert cli(project, "--data", str(bad), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "'y'" in err and "row 11" in err  # line 11: header + 10th row
    assert not out.exists()

    rows(8, 200).drop(columns=["color"]).to_csv(bad, index=False)
    assert cli(project, "--data", str(bad), "--out", str(out)) == 2
    assert "no column 'color'" in capsys.readouterr().err
    assert cli(project, "--data", str(tmp_path / "nothing.csv"), "--out", str(out)) == 2
    assert "nothing.csv" in capsys.readouterr().err


# ------------------------------------------------------------------------------ alerts


def expected_alert(root: Path, class_name: str, gap: float) -> dict:
    """The class-share alert as rules.yml words it for this class and gap."""
    rules = yaml.safe_load((root / "deploy" / "prometheus" / "rules.yml").read_text())
    rule = next(
        r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "MLServeClassShareDrift"
    )
    words = {
        "{{ $labels.class_name }}": class_name,
        "{{ $value | humanizePercentage }}": f"{gap * 100:.4g}%",
    }
    annotations = {}
    for key, text in rule["annotations"].items():
        for template, value in words.items():
            text = text.replace(template, value)
        annotations[key] = text
    return {
        "exp_labels": {"severity": "warn", "class_name": class_name},
        "exp_annotations": annotations,
    }


def test_the_class_share_alert_fires_for_a_tables_classes(project, tmp_path):
    """rules.yml's class-share alert knows nothing of images: with a table model's reference
    (classes named by strings) it fires on the class whose live share moved."""
    promtool = require_tool("promtool", "Debian: apt-get install prometheus")
    root = Path(__file__).resolve().parents[1]
    shares = dict(zip(CLASSES, project["profile"]["predicted"]["shares"], strict=True))
    (tmp_path / "reference.rules.yml").write_text(reference_rules(project["profile"]))
    (tmp_path / "rules.yml").write_text((root / "deploy" / "prometheus" / "rules.yml").read_text())
    # Per minute: class a 60 % of 100 predictions (reference about 44 %), b 30 %, c 10 %.
    series = [
        {
            "series": f'mlserve_predictions_total{{job="mlserve",api="predict",class_name="{c}"}}',
            "values": f"0+{n}x120",
        }
        for c, n in zip(CLASSES, (60, 30, 10), strict=True)
    ]
    assert abs(0.6 - shares["a"]) > 0.1 and abs(0.1 - shares["c"]) < 0.1
    test = {
        "rule_files": ["rules.yml", "reference.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "100m",
                        "alertname": "MLServeClassShareDrift",
                        "exp_alerts": [
                            expected_alert(root, c, abs(live - shares[c]))
                            for c, live in (("a", 0.6), ("b", 0.3))
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ the protocol

PROTOCOL = ("features", "reference", "feeds", "record_values", "read_inputs")


@pytest.mark.parametrize("kind", ["images", "table"])
def test_every_kind_answers_the_monitoring_protocol(kind, kind_classes):  # noqa: F811
    module = profile.monitoring({"kind": kind})
    assert module.__name__ == f"mlproject.kinds.{kind}.monitoring"
    for name in PROTOCOL:
        assert callable(getattr(module, name)), name
    assert isinstance(module.UNIT, str)
    assert "torch" not in module.__dict__
