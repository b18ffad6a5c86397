"""Permutation importance per raw column of a table model, run by onnxruntime on the
raw-column feed of a model made in the test (monitor_table_fixtures): the column the model
ignores scores exactly 0, the columns it relies on most score highest, and the output is the
same bytes for the same seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mlproject.kinds.table.explain import ExplainError, explain_table, permutation_importance
from monitor_table_fixtures import CLASSES, TARGET, Model, write_project

COLUMNS = ["x", "y", "noise", "color"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    made = write_project(tmp_path_factory.mktemp("table"))
    test = made["splits"]["test"]
    labels = np.array([CLASSES.index(c) for c in test[TARGET]])
    return Model(made["onnx"], made["spec"]), test.drop(columns=[TARGET]), labels


def test_importance_follows_what_the_model_uses(model, tmp_path):
    predict, frame, labels = model
    result = explain_table(predict, frame, labels, COLUMNS, tmp_path, repeats=5, seed=0)
    assert result["baseline"] == 1.0  # the labels are the model's own decisions
    by_name = {c["name"]: c for c in result["columns"]}
    assert by_name["noise"]["drops"] == [0.0] * 5  # its weights are zero
    assert [c["name"] for c in result["columns"]][:2] == ["x", "color"]
    assert by_name["x"]["importance_mean"] > by_name["y"]["importance_mean"] > 0
    for c in result["columns"]:
        assert c["importance_mean"] == pytest.approx(np.mean(c["drops"]))
        assert c["importance_std"] == pytest.approx(np.std(c["drops"]))
    means = [c["importance_mean"] for c in result["columns"]]
    assert means == sorted(means, reverse=True)
    assert json.loads((tmp_path / "attributions.json").read_text()) == result
    with Image.open(tmp_path / "attributions.png") as png:
        assert png.format == "PNG" and png.width > 100 and png.height > 100


def test_output_is_deterministic_for_a_seed(model, tmp_path):
    predict, frame, labels = model
    outputs = []
    for run in ("a", "b"):
        explain_table(predict, frame, labels, COLUMNS, tmp_path / run, repeats=3, seed=7)
        outputs.append(
            [
                (tmp_path / run / name).read_bytes()
                for name in ("attributions.json", "attributions.png")
            ]
        )
    assert outputs[0] == outputs[1]
    other = permutation_importance(predict, frame, labels, COLUMNS, repeats=3, seed=8)
    assert json.loads(outputs[0][0]) != other
    # A column's result does not depend on the other columns explained with it.
    alone = permutation_importance(predict, frame, labels, ["x"], repeats=3, seed=7)
    together = json.loads(outputs[0][0])
    assert alone["columns"][0] == next(c for c in together["columns"] if c["name"] == "x")


def test_shuffling_keeps_missing_values_and_types(model):
    predict, frame, labels = model
    seen = []

    def spy(shuffled):
        seen.append(shuffled)
        return predict(shuffled)

    permutation_importance(spy, frame, labels, ["color", "y"], repeats=1, seed=0)
    for shuffled in seen[1:]:
        assert list(shuffled.dtypes) == list(frame.dtypes)
        for column in ("color", "y"):
            assert shuffled[column].isna().sum() == frame[column].isna().sum()
    assert not seen[1]["color"].equals(frame["color"])


def test_bad_inputs_are_named_and_nothing_is_written(model, tmp_path):
    predict, frame, labels = model
    out = tmp_path / "out"
    with pytest.raises(ExplainError, match="'Weight'"):
        explain_table(predict, frame, labels, ["x", "Weight"], out)
    with pytest.raises(ExplainError, match="labels"):
        explain_table(predict, frame, labels[:-1], COLUMNS, out)

    def broken(shuffled):
        raise RuntimeError("onnxruntime failed")

    with pytest.raises(RuntimeError):
        explain_table(broken, frame, labels, COLUMNS, out)
    assert not out.exists() or not any(out.iterdir())
