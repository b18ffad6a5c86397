"""Batch scoring: `make predict INPUT=<file or folder> OUTPUT=<csv>`, or

    python -m mlproject.serve.predict --input data/cars.csv --output reports/predictions.csv

One output row per input item: `id` (an image's path under the folder, or its file name; a
table's `id` column when it has one that is not a feature, else its row number, 0-based), then
what the model's task writes: a classifier's `class` and its `probability`, a regression
model's `prediction` (mlproject.tasks.<task>_serving). onnxruntime and the
model card only, like the server (no PyTorch): the model's data kind reads the input
(`kinds.<kind>.serving`: a folder of images or one image; a CSV or Parquet table) with the same
preprocessing as the server and training. Bad input (a missing file, a table without one of the
model's columns, a cell that is not a number) exits 2 with a message naming it; the output is
written atomically, whole or not at all.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ..core.io import atomic_path
from .errors import RequestError
from .model import Model, ModelLoadError, load_model

BATCH = 256  # rows per onnxruntime run: large enough that a run's fixed cost vanishes


def predict(model: Model, source: Path, output: Path, batch: int = BATCH) -> int:
    """Score every item of `source` into the CSV `output`; returns the number of rows.
    Raises FileNotFoundError or RequestError (the message names the file, row or column)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder (INPUT)")
    task = model.task
    rows = 0
    with atomic_path(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", *task.csv_header])
        for ids, feed, n in model.kind.batch_items(source, batch):
            cells = task.csv_rows(model.run(feed))
            writer.writerows([i, *c] for i, c in zip(ids, cells, strict=True))
            rows += n
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlproject.serve.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, type=Path, help="file or folder to score")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write")
    parser.add_argument("--model", type=Path, default=Path("models/model.onnx"))
    parser.add_argument("--card", type=Path, default=Path("models/model_card.json"))
    parser.add_argument("--batch", type=int, default=BATCH, help="rows per run")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, args.card, warmup_batches=())
        rows = predict(model, args.input, args.output, max(1, args.batch))
    except (ModelLoadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RequestError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or args.input}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {rows} predictions of {model.name} ({model.version})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
