"""The prediction log's wire format: the chunks the server's hand-off thread writes to the
writer process's pipe.

A pixel chunk (images): a header (magic PLG1, n items, C, H, W, K), then n float64 timestamps,
n uint8 route codes, n*C*H*W uint8 pixels and n*K float32 scores (probabilities, or logits when
the model has no probabilities output).

A rows chunk (tables): a header (magic PLT1, n items, K, payload bytes), then the n timestamps,
n route codes and n*K scores as above, then a JSON payload `{"columns": [name, ...], "values":
[[value per row] per column]}`: the raw values the client sent, numbers or strings, null for
missing. A table's features are few and of mixed types: JSON is the smallest form that keeps
them as sent, and the writer process writes them into the record as they are.
"""

from __future__ import annotations

import json
import os
import struct
from typing import BinaryIO, NamedTuple

import numpy as np

ROUTES = ("infer", "predict")
ROUTE_CODES = {name: i for i, name in enumerate(ROUTES)}
HEADER = struct.Struct("<4sIHHHH")
MAGIC = b"PLG1"
ROWS_HEADER = struct.Struct("<4sIHI")
ROWS_MAGIC = b"PLT1"


class Rows(NamedTuple):
    """A rows chunk's features: column names, and per column its values (row order)."""

    columns: list[str]
    values: list[list]


def encode_chunk(ts: np.ndarray, routes: np.ndarray, pixels: np.ndarray, scores: np.ndarray):
    """One chunk as a list of buffers (written together, copied once by the kernel)."""
    n, c, h, w = pixels.shape
    return [
        HEADER.pack(MAGIC, n, c, h, w, scores.shape[1]),
        np.ascontiguousarray(ts, dtype="<f8"),
        np.ascontiguousarray(routes, dtype="u1"),
        np.ascontiguousarray(pixels, dtype="u1"),
        np.ascontiguousarray(scores, dtype="<f4"),
    ]


def encode_rows_chunk(ts: np.ndarray, routes: np.ndarray, rows: Rows, scores: np.ndarray):
    """One rows chunk as a list of buffers."""
    payload = json.dumps({"columns": rows.columns, "values": rows.values}).encode()
    return [
        ROWS_HEADER.pack(ROWS_MAGIC, len(ts), scores.shape[1], len(payload)),
        np.ascontiguousarray(ts, dtype="<f8"),
        np.ascontiguousarray(routes, dtype="u1"),
        np.ascontiguousarray(scores, dtype="<f4"),
        payload,
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


def read_chunk(stream: BinaryIO):
    """(ts, routes, pixels or Rows, scores) of the next chunk, or None at the end of the stream."""
    magic = stream.read(4)
    if not magic:
        return None
    if len(magic) < 4:
        raise ValueError(f"prediction log: truncated chunk header ({len(magic)} bytes)")
    if magic == ROWS_MAGIC:
        head = magic + _read(stream, ROWS_HEADER.size - 4, "chunk header")
        _, n, k, size = ROWS_HEADER.unpack(head)
        body = _read(stream, n * (8 + 1 + 4 * k) + size, "chunk")
        ts = np.frombuffer(body, "<f8", n, 0)
        routes = np.frombuffer(body, "u1", n, 8 * n)
        scores = np.frombuffer(body, "<f4", n * k, 9 * n).reshape(n, k)
        payload = json.loads(body[9 * n + 4 * n * k :])
        return ts, routes, Rows(payload["columns"], payload["values"]), scores
    if magic != MAGIC:
        raise ValueError(f"prediction log: bad chunk header {magic!r}")
    head = magic + _read(stream, HEADER.size - 4, "chunk header")
    _, n, c, h, w, k = HEADER.unpack(head)
    size = n * (8 + 1 + c * h * w + 4 * k)
    body = _read(stream, size, "chunk")
    ts = np.frombuffer(body, "<f8", n, 0)
    routes = np.frombuffer(body, "u1", n, 8 * n)
    pixels = np.frombuffer(body, "u1", n * c * h * w, 9 * n).reshape(n, c, h, w)
    scores = np.frombuffer(body, "<f4", n * k, 9 * n + n * c * h * w).reshape(n, k)
    return ts, routes, pixels, scores
