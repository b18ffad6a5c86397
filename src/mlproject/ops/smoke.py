"""The smoke test of a running inference server: ready, one Open Inference Protocol inference,
one /predict with what the data kind reads (a blank image, or one table row), each answer checked
as the task says (a class of the card, or a finite number). Standard library, NumPy and Pillow
only; the release job runs it against the image it built, and tests against a local server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from .. import kinds, tasks
from ..core.errors import ProjectError
from ..serve.task import serving as task_serving


class SmokeError(ProjectError, RuntimeError):
    """The server does not answer as a release must; the message says which request failed."""


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def smoke(base_url: str, card: dict[str, Any], wait_s: float = 60) -> dict[str, Any]:
    """Health, one Open Inference Protocol inference and one /predict against a running server."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if http("GET", f"{base_url}/v2/health/ready", timeout=2)[0] == 200:
                break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SmokeError(f"{base_url}/v2/health/ready: not ready after {wait_s:.0f} s.")
        time.sleep(0.5)
    # What to send is the data kind's (mlproject.kinds): a blank image, or one table row.
    payload, form, content_type = kinds.for_spec(card["input"]).serving.smoke_requests(card)
    status, body = http(
        "POST",
        f"{base_url}/v2/models/{card['name']}/infer",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )
    if status != 200:
        raise SmokeError(f"infer: HTTP {status}: {body[:300]!r}")
    outputs = json.loads(body)["outputs"]
    logits = next((o for o in outputs if o["name"] == card["output"]["name"]), outputs[0])
    width = card["output"]["shape"][-1]  # the classes, or one predicted number (FP32 [N, 1])
    if logits["shape"] != [1, width]:
        raise SmokeError(f"infer: output shape {logits['shape']}, expected [1, {width}]")
    status, body = http(
        "POST",
        f"{base_url}/predict",
        form,
        {"Content-Type": content_type},
    )
    if status != 200:
        raise SmokeError(f"predict: HTTP {status}: {body[:300]!r}")
    text = body.decode()
    try:
        items = json.loads(text)["predictions"]
    except (ValueError, KeyError, TypeError):
        raise SmokeError(f"predict: not an answer with 'predictions': {text[:300]}") from None
    if not isinstance(items, list) or not items:
        raise SmokeError(f"predict: no predictions in the answer: {text[:300]}")
    problem = task_serving(tasks.name_of(card)).answer_problem(card, items[0])
    if problem:
        raise SmokeError(f"predict: {problem}")
    print(f"smoke: {base_url} ready; infer -> {logits['shape']}; predict -> {text[:120]}")
    return {"infer": logits, "predict": json.loads(text)}
