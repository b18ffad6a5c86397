"""Batch scoring (`make predict INPUT=... OUTPUT=...`, `python -m mlproject.serve.predict`): a
table (CSV, Parquet) and images (a folder, one file), one output row per input, the numbers the
model gives, named errors with exit 2 and no output written, and no PyTorch.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mlproject.core.preprocess import normalize, open_image, to_pixels
from mlproject.serve.predict import main
from serve_table_model import CLASSES, ROWS, SPEC, build, reference

from tooling import png, tiny_model

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [c["name"] for c in SPEC["columns"]]


@pytest.fixture(scope="module")
def table_model(tmp_path_factory):
    return build(tmp_path_factory.mktemp("table"))


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("images"))


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    lines = [",".join(columns)]
    lines += [",".join("" if r.get(c) is None else str(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_output(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run(model_files, source: Path, output: Path) -> int:
    model, card = model_files
    args = ["--input", str(source), "--output", str(output), "--model", str(model)]
    return main([*args, "--card", str(card)])


def check_table(out: list[dict], rows: list[dict]) -> None:
    want = reference(rows)
    assert [r["id"] for r in out] == [str(i) for i in range(len(rows))]
    assert [r["class"] for r in out] == [CLASSES[int(w.argmax())] for w in want]
    np.testing.assert_allclose([float(r["probability"]) for r in out], want.max(axis=1), atol=2e-6)


def test_csv_table_one_row_per_input_extra_columns_ignored(table_model, tmp_path):
    # The original file's other columns (a name, the target) are ignored; order does not matter.
    rows = [{**r, "Name": f"car {i}", "Origin": "USA"} for i, r in enumerate(ROWS * 100)]
    source = write_csv(tmp_path / "cars.csv", rows, ["Name", *COLUMNS[::-1], "Origin"])
    assert run(table_model, source, tmp_path / "out" / "pred.csv") == 0
    check_table(read_output(tmp_path / "out" / "pred.csv"), rows)


def test_parquet_table_with_nulls(table_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = {
        c: [r[c] if c in ("Horsepower", "Weight_in_lbs") else _cat(r[c]) for r in ROWS]
        for c in COLUMNS
    }
    pq.write_table(pa.table(data), tmp_path / "rows.parquet")
    assert run(table_model, tmp_path / "rows.parquet", tmp_path / "pred.csv") == 0
    check_table(read_output(tmp_path / "pred.csv"), ROWS)


def _cat(v):
    return None if v is None else str(v)


@pytest.mark.parametrize(
    ("make_input", "words"),
    [
        (lambda d: d / "nowhere.csv", ["nowhere.csv", "no such file"]),
        (lambda d: write_csv(d / "x.csv", ROWS, COLUMNS[:3]), ["x.csv", "missing column", "Maker"]),
        (
            lambda d: write_csv(d / "x.csv", [*ROWS, {**ROWS[0], "Horsepower": "fast"}], COLUMNS),
            ["x.csv", "row 5", "Horsepower", "fast"],
        ),
        (lambda d: d / "x.json", ["x.json", ".csv or .parquet"]),
        (lambda d: d, ["folder"]),
    ],
    ids=["missing-file", "missing-column", "text-in-number", "unknown-format", "folder"],
)
def test_bad_table_input_exits_2_naming_it_and_writes_nothing(
    table_model, tmp_path, capsys, make_input, words
):
    source = make_input(tmp_path)
    if source.suffix == ".json":
        source.write_text("{}")
    output = tmp_path / "out.csv"
    assert run(table_model, source, output) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)
    assert not output.exists()
    assert not list(tmp_path.glob(".out.csv*"))  # no temporary file left behind


def test_images_folder_and_single_file(image_model, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    names = ["3/a.png", "3/b.png", "7/c.png"]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png(rng.integers(0, 256, (8, 8), dtype=np.uint8)))
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: skipped
    assert run(image_model, folder, tmp_path / "pred.csv") == 0
    out = read_output(tmp_path / "pred.csv")
    assert [r["id"] for r in out] == names
    session = ort.InferenceSession(str(image_model[0]), providers=["CPUExecutionProvider"])
    for r in out:
        img = open_image((folder / r["id"]).read_bytes())
        x = normalize(to_pixels(img, 8, 8, 1, "stretch")[None], (0.3,), (0.4,))
        probs = session.run(["probabilities"], {"input": x})[0][0]
        assert r["class"] == str(int(probs.argmax()))
        assert float(r["probability"]) == pytest.approx(float(probs.max()), abs=2e-6)
    assert run(image_model, folder / "7/c.png", tmp_path / "one.csv") == 0
    assert read_output(tmp_path / "one.csv") == [{**out[2], "id": "c.png"}]


def test_a_broken_image_is_named(image_model, tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not a png")
    assert run(image_model, tmp_path / "imgs", tmp_path / "pred.csv") == 2
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "pred.csv").exists()


def test_make_predict_runs_the_module_without_pytorch(table_model, tmp_path):
    """`make predict` as a user types it, and no training library imported on the way."""
    source = write_csv(tmp_path / "cars.csv", ROWS, COLUMNS)
    model, card = table_model
    out = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "predict",
            f"INPUT={source}",
            f"OUTPUT={tmp_path / 'pred.csv'}",
            f"MODEL={model}",
            f"CARD={card}",
            "VENV_PREBUILT=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    check_table(read_output(tmp_path / "pred.csv"), ROWS)
    missing = subprocess.run(
        ["make", "--no-print-directory", "predict", "VENV_PREBUILT=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "INPUT=" in missing.stderr
    code = (
        "import sys; from mlproject.serve.predict import main; "
        f"rc = main(['--input', {str(source)!r}, '--output', {str(tmp_path / 'p2.csv')!r}, "
        f"'--model', {str(model)!r}, '--card', {str(card)!r}]); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'hydra', 'dvc', 'omegaconf', 'sklearn', 'pandas'}); print('LOADED', rc, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "LOADED 0 []" in out.stdout, out.stdout + out.stderr
