"""Request body limits at the ASGI edge, before Django reads anything.

Django's ASGI handler reads the whole request body (into memory, then a temporary file) before the first
middleware runs, so `BodySizeLimitMiddleware` and DATA_UPLOAD_MAX_MEMORY_SIZE only judge a body that has already
been received in full: a client could fill the disk through any route, the login page included. This wrapper
refuses a declared Content-Length over the route's limit at once, and reads an undeclared (chunked) body only up
to the limit before handing it on. /v1/ is the gateway's: it streams uploads and applies its own per-route limits.

`manage.py serve` also judges a request at the socket, as soon as its headers are in (`sparkcontrol.serving`):
the server there would otherwise receive a whole body before any application code runs. The helpers below say
what it checks: the largest body a route takes (`edge_body_limit`, the gateway's limits included), whether the
route needs credentials (`edge_credentials_needed`), and the JSON refusal in the route's own error shape.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNLIMITED_PREFIXES = ("/v1/",)
GATEWAY_PREFIX = "/v1/"
GATEWAY_UPLOAD_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")
# The API routes that need no credentials; every other /api/ route has an auth callable (a test walks them).
PUBLIC_API_PATHS = frozenset({"/api/health", "/api/docs", "/api/openapi.json"})


def body_limit_for(path: str) -> int | None:
    """The largest body a route takes: the API's limit under /api/, the form limit elsewhere; None for /v1/."""
    if path.startswith(UNLIMITED_PREFIXES):
        return None
    if path.startswith("/api/"):
        return settings.API_MAX_BODY_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def edge_body_limit(path: str) -> int:
    """The largest body a route takes, the gateway's per-route limits included (uploads vs JSON)."""
    limit = body_limit_for(path)
    if limit is not None:
        return limit
    from gateway.conf import gateway_settings

    gateway = gateway_settings()
    return gateway.max_audio_bytes if path.rstrip("/") in GATEWAY_UPLOAD_PATHS else gateway.max_json_bytes


def edge_credentials_needed(path: str) -> bool:
    """Whether a route answers 401 without credentials: every /api/ route but the public ones, and /v1/ unless
    the gateway is open."""
    if path.startswith(GATEWAY_PREFIX):
        from gateway.conf import gateway_settings

        return not gateway_settings().open
    return path.startswith("/api/") and path.rstrip("/") not in PUBLIC_API_PATHS


def edge_refusal(path: str, status: int, message: str, **extra: Any) -> dict[str, Any]:
    """A refusal in the route's error shape: OpenAI's under /v1/, `{"detail": ...}` elsewhere."""
    if path.startswith(GATEWAY_PREFIX):
        kind = {401: "authentication_error"}.get(status, "invalid_request_error")
        code = {401: "unauthenticated", 413: "body_too_large"}.get(status, "bad_request")
        return {"error": {"message": message, "type": kind, "code": code, **extra}}
    return {"detail": message, **extra}


def edge_unauthenticated(path: str) -> dict[str, Any]:
    """The 401 body a route gives a request without valid credentials (the same words as the route itself)."""
    if path.startswith(GATEWAY_PREFIX):
        return edge_refusal(path, 401, "authentication required: 'Authorization: Bearer <token>'")
    return edge_refusal(path, 401, "authentication required: a session or 'Authorization: Bearer <token>'")


def edge_too_large(path: str, limit: int, declared: int | None) -> dict[str, Any]:
    """The 413 body for a route's body over its limit."""
    what = f"request body of {declared} bytes" if declared is not None else "request body"
    return edge_refusal(path, 413, f"{what} is over the limit of {limit} bytes", limit=limit)


class BodyLimit:
    """ASGI middleware: 413 (JSON) for a body over the route's limit, without reading more than the limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_for(scope.get("path", ""))
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await _refuse(send, 400, {"detail": "Content-Length is not a number"})
            return
        if declared is not None and declared > limit:
            await _refuse(send, 413, _too_large(limit, declared))
            return
        # Read the body here, never past the limit, then replay it to the app.
        messages: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _refuse(send, 413, _too_large(limit, None))
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> dict[str, Any]:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


def _too_large(limit: int, declared: int | None) -> dict[str, Any]:
    what = f"request body of {declared} bytes" if declared is not None else "request body"
    return {"detail": f"{what} is over the limit of {limit} bytes", "limit": limit}


async def _refuse(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
