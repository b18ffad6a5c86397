"""Request and item ids: what joins a prediction-log record to ground truth that arrives later
(`make monitor` with a file of `id,actual`). The contract is in mlproject.serve.predlog's
docstring and docs/serving.md; in short:

* a request's id is the Open Inference Protocol body's `id`, else the `X-Request-ID` header,
  else a uuid4 hex the server makes; an empty one counts as absent; at most MAX_LENGTH
  characters (a longer one is a 400 naming where it came from);
* an item's id is the request's id when the request has one item, else `<request id>#<i>`
  (i: the item's 0-based index in the request), unless the item brings its own: a table row's
  `id` field (JSON) or `id` column (CSV), which is then not a feature.
"""

from __future__ import annotations

import uuid

HEADER = "x-request-id"
HEADER_BYTES = HEADER.encode()
MAX_LENGTH = 256


def checked(value: str, where: str) -> str:
    if len(value) > MAX_LENGTH:
        from .errors import RequestError  # here: the log's writer process imports this module

        raise RequestError(400, f"{where}: {len(value)} characters; an id has at most {MAX_LENGTH}")
    return value


def request_id(body_id: str | None, header_id: str | None) -> str:
    """The request's id: the body's, else the header's, else a new uuid4 hex."""
    if body_id:
        return checked(body_id, "id")
    if header_id:
        return checked(header_id, "X-Request-ID")
    return uuid.uuid4().hex


def item_ids(request: str, n: int, own: list[str | None] | None = None) -> list[str]:
    """Each item's id: its own if it has one, else the request's (suffixed `#i` when the
    request has several items)."""
    if n == 1 and not (own and own[0]):
        return [request]
    if not own:
        return [f"{request}#{i}" for i in range(n)]
    return [mine or f"{request}#{i}" for i, mine in enumerate(own)]
