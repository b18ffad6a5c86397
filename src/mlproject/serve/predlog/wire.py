"""The prediction log's wire format: the chunks the server's hand-off thread writes to the
writer process's pipe.

A pixel chunk (images): a header (magic PLG2, n items, C, H, W, K, ids bytes), then n float64
timestamps, n uint8 route codes, n*C*H*W uint8 pixels, n*K float32 scores (the output the task
logs: a classifier's probabilities, or logits when the model has no probabilities output; a
regression model's prediction, K = 1) and the items' ids as a JSON array of strings (null: none
given).

A rows chunk (tables): a header (magic PLT2, n items, K, payload bytes, ids bytes), then the n
timestamps, n route codes and n*K scores as above, then a JSON payload `{"columns": [name, ...],
"values": [[value per row] per column]}`: the raw values the client sent, numbers or strings,
null for missing, then the ids as above. A table's features are few and of mixed types: JSON is
the smallest form that keeps them as sent, and the writer process writes them into the record as
they are.
"""

from __future__ import annotations

import json
import os
import struct
from typing import BinaryIO, NamedTuple

import numpy as np

ROUTES = ("infer", "predict")
ROUTE_CODES = {name: i for i, name in enumerate(ROUTES)}
HEADER = struct.Struct("<4sIHHHHI")
MAGIC = b"PLG2"
ROWS_HEADER = struct.Struct("<4sIHII")
ROWS_MAGIC = b"PLT2"


class Rows(NamedTuple):
    """A rows chunk's features: column names, and per column its values (row order)."""

    columns: list[str]
    values: list[list]


def _scores(scores: np.ndarray) -> np.ndarray:
    """[n, K] float32 (a regression model's [n] prediction is K = 1)."""
    return np.ascontiguousarray(scores, dtype="<f4").reshape(len(scores), -1)


def encode_chunk(
    ts: np.ndarray,
    routes: np.ndarray,
    pixels: np.ndarray,
    scores: np.ndarray,
    ids: list[str] | None = None,
):
    """One chunk as a list of buffers (written together, copied once by the kernel)."""
    n, c, h, w = pixels.shape
    scores = _scores(scores)
    id_bytes = json.dumps(ids).encode()
    return [
        HEADER.pack(MAGIC, n, c, h, w, scores.shape[1], len(id_bytes)),
        np.ascontiguousarray(ts, dtype="<f8"),
        np.ascontiguousarray(routes, dtype="u1"),
        np.ascontiguousarray(pixels, dtype="u1"),
        scores,
        id_bytes,
    ]


def encode_rows_chunk(
    ts: np.ndarray,
    routes: np.ndarray,
    rows: Rows,
    scores: np.ndarray,
    ids: list[str] | None = None,
):
    """One rows chunk as a list of buffers."""
    payload = json.dumps({"columns": rows.columns, "values": rows.values}).encode()
    scores = _scores(scores)
    id_bytes = json.dumps(ids).encode()
    return [
        ROWS_HEADER.pack(ROWS_MAGIC, len(ts), scores.shape[1], len(payload), len(id_bytes)),
        np.ascontiguousarray(ts, dtype="<f8"),
        np.ascontiguousarray(routes, dtype="u1"),
        scores,
        payload,
        id_bytes,
    ]


def write_all(fd: int, buffers: list) -> None:
    """Write the buffers in order with as few calls as the kernel allows; each call releases
    the GIL while it writes (and while it waits, if the writer process is behind)."""
    total = sum(memoryview(b).nbytes for b in buffers)
    done = os.writev(fd, buffers)
    if done < total:  # a signal cut the write short: send the rest
        rest = memoryview(b"".join(memoryview(b).cast("B") for b in buffers))[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def _read(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise ValueError(f"prediction log: truncated {what} ({len(data)} of {size} bytes)")
    return data


def _ids(blob: bytes, n: int) -> list[str] | None:
    ids = json.loads(blob)
    if ids is not None and len(ids) != n:
        raise ValueError(f"prediction log: {len(ids)} ids for {n} items")
    return ids


def read_chunk(stream: BinaryIO):
    """(ts, routes, pixels or Rows, scores, ids) of the next chunk, or None at the end of the
    stream."""
    magic = stream.read(4)
    if not magic:
        return None
    if len(magic) < 4:
        raise ValueError(f"prediction log: truncated chunk header ({len(magic)} bytes)")
    if magic == ROWS_MAGIC:
        head = magic + _read(stream, ROWS_HEADER.size - 4, "chunk header")
        _, n, k, size, id_size = ROWS_HEADER.unpack(head)
        start = n * (8 + 1 + 4 * k)
        body = _read(stream, start + size + id_size, "chunk")
        ts = np.frombuffer(body, "<f8", n, 0)
        routes = np.frombuffer(body, "u1", n, 8 * n)
        scores = np.frombuffer(body, "<f4", n * k, 9 * n).reshape(n, k)
        payload = json.loads(body[start : start + size])
        ids = _ids(body[start + size :], n)
        return ts, routes, Rows(payload["columns"], payload["values"]), scores, ids
    if magic != MAGIC:
        raise ValueError(f"prediction log: bad chunk header {magic!r}")
    head = magic + _read(stream, HEADER.size - 4, "chunk header")
    _, n, c, h, w, k, id_size = HEADER.unpack(head)
    size = n * (8 + 1 + c * h * w + 4 * k)
    body = _read(stream, size + id_size, "chunk")
    ts = np.frombuffer(body, "<f8", n, 0)
    routes = np.frombuffer(body, "u1", n, 8 * n)
    pixels = np.frombuffer(body, "u1", n * c * h * w, 9 * n).reshape(n, c, h, w)
    scores = np.frombuffer(body, "<f4", n * k, 9 * n + n * c * h * w).reshape(n, k)
    return ts, routes, pixels, scores, _ids(body[size:], n)
