"""Prediction log: one JSON line per predicted item, for drift monitoring (off by default).

The work is split so that almost none of it runs under the server's GIL:

* the request path appends a tuple referring to its arrays to a deque: no lock, no event, no
  thread wake-up per record;
* a hand-off thread wakes on a timer (FLUSH_INTERVAL, or sooner when the deque passes
  HIGH_WATER), turns what is queued into one binary chunk per image size with a few vectorized
  NumPy calls (un-normalized uint8 pixels, the output the task logs, timestamps, routes, ids)
  and writes it to a pipe; the write itself releases the GIL;
* a writer process (`python -m mlproject.serve.predlog`, started by the server, NumPy only)
  reads the chunks, computes the input summaries (`mlproject.monitor.features`), formats the
  lines (the prediction's members are the task's: `mlproject.tasks.<task>_serving.log_format`)
  and appends them to rotating files.

Modules: queue.py (the request path's queue, the hand-off thread, the writer process's
lifetime), wire.py (the binary chunks on the pipe), writer.py (the writer process: lines, files).

Formatting thousands of lines a second in the server's own process would hold the GIL the event
loop needs: measured in the server, the in-process writer cost about 9 us of GIL time per record
against about 1 us for the hand-off.

Beyond `queue_size` pending requests, records are dropped and counted, as they are if the writer
process dies. `close()` sends everything queued, closes the pipe and waits for the writer to
write it: a clean shutdown loses no record. The writer ignores SIGINT and SIGTERM (a Ctrl-C
reaches the whole process group) and stops when the pipe closes, so it always drains first, and
never outlives the server.

Files, in `PREDICTION_LOG=<dir>`: `predictions.jsonl` (being written), then `predictions.jsonl.1`
(the newest full one) ... `predictions.jsonl.<PREDICTION_LOG_FILES>` (the oldest kept). Each file
stays under PREDICTION_LOG_MAX_BYTES. A record:

    {"ts": 1717171717.123, "id": "req-7#2", "model": "digits-smallcnn",
     "model_sha256": "809a...", "route": "infer", "features": {"brightness": 0.31,
     "contrast": 0.38, "dark_fraction": 0.52, "bright_fraction": 0.2, "edge_energy": 0.21},
     "predicted": "3", "confidence": 0.998}

A classifier's record has `"predicted": "<class name>", "confidence": <its probability>`
(null if not finite); a regression model's has `"predicted": <number>` (the float32 prediction
in its shortest form, null if not finite) and no `confidence`.

Ids, the contract that joins a record to ground truth that comes later (`make monitor` with a
file of `id,actual`; the code is mlproject.serve.ids): every record has an `"id"`, a string;
* a request's id is the Open Inference Protocol body's `id`, else its `X-Request-ID` header,
  else a uuid4 hex the server makes (empty counts as absent; at most 256 characters);
* an item's id is the request's id if the request has one item, else `<request id>#<i>` with
  `i` the item's 0-based index in the request;
* a table row sent to /predict may carry its own id (an `id` field in JSON, a string or an
  integer; an `id` column in a CSV), which is then its record's id, unsuffixed, and not a
  feature (unless the model takes a column named `id`).
The answers carry the ids back: /infer's `id`, /predict's `id` and each prediction's `id`.

`features` are computed on the model-sized uint8 pixels: for /predict the preprocessed image
before normalization, for /infer the tensor un-normalized with the card's mean and std.
A table's record has the raw row instead (`submit_rows`, a rows chunk in wire.py):
`"features": {"Horsepower": 130.0, "Origin": "USA", "Cylinders": null, ...}`, a number, a string
or null (missing) per column, as the client sent it.
"""

from __future__ import annotations

from .queue import PredictionLog
from .wire import Rows, encode_chunk, encode_rows_chunk, read_chunk
from .writer import FILE_NAME, LineFormatter, LogConfig, RotatingAppender, rotated_names

__all__ = [
    "FILE_NAME",
    "LineFormatter",
    "LogConfig",
    "PredictionLog",
    "RotatingAppender",
    "Rows",
    "encode_chunk",
    "encode_rows_chunk",
    "read_chunk",
    "rotated_names",
]
