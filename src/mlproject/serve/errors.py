"""Client errors: one exception type, one response shape (`{"error": "<field>: <problem>"}`).

The Open Inference Protocol answers errors as `{"error": message}`; the friendly API uses the
same shape so that a client reads every failure the same way.
"""

from __future__ import annotations

import json

from starlette.responses import Response


class RequestError(Exception):
    """A bad request. `message` starts with the field it is about."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps({"error": message}),
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
