"""The client side, for the tests, the benchmark and smoke tests: request bodies and raw HTTP.

Raw `http.client` rather than a client library: the requests carry exactly the headers given.
"""

from __future__ import annotations

import http.client
import json
import math
import urllib.request

import numpy as np


def infer_body(
    x: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] = (1, 1, 8, 8),
    data: list | None = None,
    name: str = "input",
    datatype: str = "FP32",
    **fields,
) -> bytes:
    """An Open Inference Protocol JSON request with one input tensor: the array `x`, or `data`
    (default: 0.5 everywhere) declared with `shape`; `fields` are added to the request as given."""
    if x is not None:
        shape, data = x.shape, x.ravel().tolist()
    elif data is None:
        data = [0.5] * math.prod(shape)
    tensor = {"name": name, "shape": list(shape), "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor], **fields}).encode()


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a new connection: (status, headers with lower-case names, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def count_5xx(url: str) -> float:
    """Responses with a 5xx status that the server at `url` counted in its /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlserve_requests_total") and 'status="5' in line
    )
