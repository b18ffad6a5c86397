"""The report's pure parts on hand-made metric JSON: rows, directions, markdown."""

from __future__ import annotations

import math

import pytest

from mlproject.report.diff import metric_row, metric_tables, params_changed
from mlproject.report.gate import GateConfig, evaluate
from mlproject.report.render import FOLD_ROWS, fmt, render

GATE = GateConfig(
    min={"accuracy": 0.9},
    max_regression={"accuracy": 0.01},
    lower_is_better=["loss"],
    neutral=["n_test"],
)


def diff_of(old: dict, new: dict, file: str = "reports/eval/metrics.json") -> dict:
    """What `dvc metrics diff --json --all` prints for these two metric files."""
    keys = {**old, **new}
    return {file: {k: {"old": old.get(k), "new": new.get(k)} for k in keys}}


def rows_by_name(old: dict, new: dict, gate: GateConfig = GATE) -> dict[str, dict]:
    (table,) = metric_tables(diff_of(old, new), gate, cwd="/nonexistent")
    return {r["name"]: r for r in table["rows"]}


def report_of(old: dict, new: dict, **extra) -> dict:
    tables = metric_tables(diff_of(old, new), GATE, cwd="/nonexistent")
    base_vals = {k: v for k, v in old.items()}
    report = {
        "base": {"rev": "a" * 40, "short": "aaaaaaa", "label": "main"},
        "head": {"rev": "b" * 40, "short": "bbbbbbb", "dirty": False},
        "ci": None,
        "params": [],
        "metrics": tables,
        "gate": evaluate(GATE, new, base_vals),
    }
    report.update(extra)
    return report


def test_added_removed_and_unchanged_metrics_are_marked():
    rows = rows_by_name(
        {"accuracy": 0.9, "old_metric": 1.0, "f1_macro": 0.8},
        {"accuracy": 0.9, "new_metric": 2.0, "f1_macro": 0.85},
    )
    assert rows["accuracy"]["mark"] == "same" and rows["accuracy"]["delta"] == 0
    assert rows["new_metric"]["mark"] == "new" and rows["new_metric"]["old"] is None
    assert rows["old_metric"]["mark"] == "removed" and rows["old_metric"]["new"] is None
    assert rows["f1_macro"]["mark"] == "better"
    assert rows["f1_macro"]["delta"] == pytest.approx(0.05)


def test_lower_is_better_for_loss_and_neutral_counts():
    rows = rows_by_name(
        {"loss": 0.5, "val.loss": 0.2, "accuracy": 0.9, "n_test": 100},
        {"loss": 0.4, "val.loss": 0.3, "accuracy": 0.8, "n_test": 120},
    )
    assert rows["loss"]["direction"] == "lower" and rows["loss"]["mark"] == "better"
    assert rows["val.loss"]["mark"] == "worse"
    assert rows["accuracy"]["mark"] == "worse"
    assert rows["n_test"]["mark"] == "changed"  # a count is neither better nor worse


def test_nan_has_no_delta_and_no_direction():
    row = metric_row("accuracy", 0.9, float("nan"), "higher")
    assert row["delta"] is None and row["mark"] == "n/a"
    assert fmt(float("nan")) == "NaN"


def test_missing_base_renders_every_metric_as_new_and_notes_it():
    new = {"accuracy": 0.97, "loss": 0.1}
    report = report_of({}, new, note="The base has no metrics yet.")
    md = render(report, images="none")
    assert "| `accuracy` | — | 0.97 |  | new |" in md
    assert "The base has no metrics yet." in md
    # Regression checks have nothing to compare with; floors still apply.
    assert report["gate"]["passed"]
    assert "no base value" in md


def test_render_puts_the_verdict_first_then_params_metrics_and_deltas():
    report = report_of(
        {"accuracy": 0.95, "loss": 0.2},
        {"accuracy": 0.90, "loss": 0.1},
        params=params_changed(
            {
                "params.yaml": {
                    "train.epochs": {"old": 40, "new": 8},
                    "train.lr": {"old": 0.003, "new": 0.003},
                }
            }
        ),
    )
    md = render(report, images="none")
    first = md.splitlines()[0]
    assert first.startswith("### ❌ Quality gate: FAILED")
    assert "accuracy 0.95 -> 0.9: worse by 0.05 (over 0.01)" in first
    assert "| `train.epochs` | 40 | 8 |" in md
    assert "train.lr" not in md  # unchanged params are not listed
    assert "| `accuracy` | 0.95 | 0.9 | -0.0500 | 🔴 worse |" in md
    assert "| `loss` | 0.2 | 0.1 | -0.1000 | 🟢 better (lower is better) |" in md


def test_long_tables_fold_into_details():
    old = {f"{c}.f1": 1.0 for c in range(FOLD_ROWS + 5)}
    new = {**old, "3.f1": 0.5}
    tables = metric_tables(diff_of(old, new, "reports/eval/classes.json"), GATE, "/nonexistent")
    report = report_of({}, {}, metrics=tables)
    md = render(report, images="none")
    assert "<details><summary><code>reports/eval/classes.json</code>: 25 metrics, 1 changed" in md


def test_the_gate_metrics_file_comes_first():
    diff = {
        **diff_of({"x": 1}, {"x": 2}, "reports/train/metrics.json"),
        **diff_of({"accuracy": 1}, {"accuracy": 1}),
    }
    tables = metric_tables(diff, GATE, cwd="/nonexistent")
    assert [t["file"] for t in tables] == [
        "reports/eval/metrics.json",
        "reports/train/metrics.json",
    ]


@pytest.mark.parametrize(
    ("images", "present", "absent"),
    [
        ("inline", "![Loss](plots/loss.png)", "artifact of"),
        ("artifact", "`pr-report` artifact of [this run](https://ci/run/1#artifacts)", "!["),
        ("none", "images left out", "!["),
    ],
)
def test_image_modes(images, present, absent):
    report = report_of(
        {"accuracy": 0.95},
        {"accuracy": 0.95},
        plots=[{"title": "Loss", "image": "plots/loss.png"}],
        ci={"run_url": "https://ci/run/1"},
    )
    md = render(report, images=images)
    assert present in md
    assert absent not in md.split("#### Plots")[1]


def test_model_and_data_section():
    report = report_of(
        {"accuracy": 0.95},
        {"accuracy": 0.95},
        model={
            "size": {"old": 2048, "new": 3072},
            "latency_ms": {"old": None, "new": 0.25},
            "sha256": {"old": "ab" * 32, "new": "cd" * 32},
        },
        data={"old": "1" * 32 + ".dir", "new": "2" * 32 + ".dir", "changed": True},
    )
    md = render(report, images="none")
    assert "| ONNX size | 2.0 KiB | 3.0 KiB (+50.0%) |" in md
    assert "| n/a | 0.250 ms |" in md
    assert "**changed**" in md


def test_unknown_image_mode_is_an_error():
    with pytest.raises(ValueError, match="images must be one of"):
        render(report_of({}, {}), images="public")


def test_fmt_keeps_small_and_large_numbers_readable():
    assert fmt(0.98765) == "0.9877"
    assert fmt(7.3e-05) == "7.300e-05"
    assert fmt(270) == "270"
    assert fmt(None) == "—"
    assert fmt("auto") == "`auto`"
    assert not math.isnan(0.0) and fmt(0.0) == "0"


def test_float_noise_is_not_a_change():
    assert (
        metric_row("train.loss", 0.0012515316715103915, 0.0012515316946, "lower")["mark"] == "same"
    )
    assert metric_row("loss", 0.0382, 0.0381, "lower")["mark"] == "better"


def test_a_change_within_tolerance_and_not_significant_is_marked_unchanged():
    """A delta far below noise (+4.5e-05 on the loss) gets no green or red mark; a significant
    change, or one beyond the metric's tolerance, keeps its mark."""
    from mlproject.report.diff import settle_marks

    gate = GateConfig(
        lower_is_better=["loss"], tolerance={"loss": 0.005, "accuracy": 0.005, "f1": 0.01}
    )
    old = {"accuracy": 0.9, "f1_macro": 0.8, "loss": 0.1, "recall_macro": 0.5}
    new = {"accuracy": 0.904, "f1_macro": 0.805, "loss": 0.100045, "recall_macro": 0.6}
    tables = metric_tables(diff_of(old, new), gate, cwd="/nonexistent")
    significance = {"accuracy": {"significant": False}, "f1_macro": {"significant": True}}
    rows = {r["name"]: r for r in settle_marks(tables, gate, significance)[0]["rows"]}
    assert rows["loss"]["mark"] == "unchanged"  # within 0.005, no test: noise
    assert rows["accuracy"]["mark"] == "unchanged"  # within 0.005 and not significant
    assert rows["f1_macro"]["mark"] == "better"  # within tolerance but significant
    assert rows["recall_macro"]["mark"] == "better"  # no tolerance set: any change counts
    assert gate.tolerance_for("3.f1") == 0.01 and gate.tolerance_for("n_test") == 0.0
    md = render({**report_of(old, new), "metrics": tables})
    assert "≈ unchanged" in md and "gate.tolerance" in md
    assert "🔴" not in md


def test_a_negative_tolerance_is_refused_naming_the_key():
    from mlproject.report.gate import GateConfigError

    with pytest.raises(GateConfigError, match=r"gate\.tolerance\.loss' must be >= 0"):
        GateConfig.from_params({"gate": {"tolerance": {"loss": -1}}})
