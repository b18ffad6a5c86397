"""Client errors: one exception type, one response shape (`{"error": "<field>: <problem>"}`).

The Open Inference Protocol answers errors as `{"error": message}`; the friendly API uses the
same shape so that a client reads every failure the same way. A message never shows a Python
object's representation (`<_io.BytesIO object at 0x7f...>`): a library's text quoted in one is
cleaned by `plain()` on the way out.
"""

from __future__ import annotations

import json
import re

from starlette.responses import Response

# `<_io.BytesIO object at 0x7f8e...>`, `<function f at 0x...>`: what repr() says of an object.
_OBJECT_REPR = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\s*\bat 0x[0-9a-fA-F]+\b|\b0x[0-9a-fA-F]{6,}\b")


def plain(message: str) -> str:
    """`message` without object representations or memory addresses (they tell a client nothing
    and show the server's internals)."""
    if "0x" not in message:
        return message
    return _ADDRESS.sub("", _OBJECT_REPR.sub("", message))


class RequestError(Exception):
    """A bad request. `message` starts with the field it is about."""

    def __init__(self, status: int, message: str):
        message = plain(message)
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps({"error": plain(message)}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


class RequestErrorMiddleware:
    """Answers a RequestError raised by the app it wraps, as the FastAPI app's exception
    handler does (for the plain ASGI routes' shorter way in: see app.ServingApp)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        except RequestError as exc:
            await error_response(exc.status, exc.message)(scope, receive, send)
