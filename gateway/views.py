"""The OpenAI-compatible front door under /v1/: thin async views over the gateway runtime.

A request is authenticated, its body checked against the route's limit, routed by its `model`, held while that
model is being swapped in, admitted under its service's cap, and relayed: the upstream's answer goes back chunk
by chunk as it arrives (server-sent events included), and an upload goes out in chunks, never parsed.
Errors use OpenAI's shape: `{"error": {"message", "type", "code", ...}}`.

With an Authorization header the views read the bearer token and never the session, the user or a CSRF token:
each is marked `serve_without_middleware`, so `manage.py serve` calls it for such a request on its event loop
without the middleware chain (host check and security headers kept; sparkcontrol/serving.py), whose sync-only
layers would cost a thread hop each. A signed-in person's request (session and CSRF) goes through the chain.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from ninja.errors import HttpError

from accounts.auth import Principal, inference_auth, verified_tokens
from accounts.models import TokenScope
from accounts.tokens import token_epoch
from cluster.models import ServiceKind
from gateway.conf import gateway_settings
from gateway.metrics import ERRORS, FIRST_BYTE, LATENCY, REQUESTS
from gateway.routing import Decision, ServiceRoute, models_list
from gateway.runtime import Lease, gateway_runtime
from gateway.upstream import CHUNK_BYTES, UpstreamError, UpstreamResponse
from swaps.services import SwapRefused, swap_request

logger = logging.getLogger(__name__)

BUFFER_MAX_BYTES = 1024 * 1024  # answers up to this size with a Content-Length are sent whole
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "server",
    "date",
}
FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "x-request-id")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    423: "locked_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}
MODEL_FIELD = re.compile(
    rb'content-disposition:[^\r\n]*\bname="?model"?[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,256})\r\n', re.I
)
SCAN_OVERLAP = 1024


@dataclass(frozen=True)
class RouteSpec:
    """One proxied route: its upstream path, body kind, body limit and the service kind that takes no-model calls."""

    name: str
    path: str
    body: str  # "json" or "multipart"
    audio: bool = False
    default_kind: str | None = None


ROUTES = {
    spec.name: spec
    for spec in (
        RouteSpec("chat/completions", "/v1/chat/completions", "json"),
        RouteSpec("completions", "/v1/completions", "json"),
        RouteSpec("embeddings", "/v1/embeddings", "json", default_kind=ServiceKind.EMBEDDINGS),
        RouteSpec("audio/transcriptions", "/v1/audio/transcriptions", "multipart", True, ServiceKind.STT),
        RouteSpec("audio/translations", "/v1/audio/translations", "multipart", True, ServiceKind.STT),
        RouteSpec("audio/speech", "/v1/audio/speech", "json", False, ServiceKind.TTS),
    )
}


class Refused(Exception):
    """An answer that ends the request early (it carries the response)."""

    def __init__(self, response: HttpResponse) -> None:
        self.response = response


def error_response(
    status: int, code: str, message: str, *, retry_after: int | None = None, **extra: object
) -> JsonResponse:
    """An OpenAI-shaped error."""
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "error"), "code": code, **extra}}
    response = JsonResponse(body, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def _refusal(decision: Decision) -> JsonResponse:
    if decision.action != "refuse":
        message = "the model is not available right now; retry later"
        return error_response(503, "model_unavailable", message, retry_after=5)
    return error_response(
        decision.status, decision.code, decision.message, retry_after=decision.retry_after, **decision.extra
    )


async def _authenticate(request: HttpRequest) -> Principal:
    if gateway_settings().open:
        return Principal(name="open-gateway", scope=TokenScope.INFERENCE, via="open")
    header = request.headers.get("Authorization", "")
    # A token verified a moment ago (by this gateway or the API) is taken without a thread hop or a query.
    principal = verified_tokens.get(header, token_epoch()) if header else None
    if principal is not None:
        return principal
    try:
        principal = await sync_to_async(inference_auth)(request)
    except HttpError as exc:
        code = "invalid_api_key" if exc.status_code == 401 else "forbidden"
        raise Refused(error_response(exc.status_code, code, str(exc.message))) from None
    if principal is None:
        raise Refused(
            error_response(401, "unauthenticated", "authentication required: 'Authorization: Bearer <token>'")
        )
    return principal


def _too_large(size: int | None, limit: int) -> Refused:
    what = f"request body of {size} bytes" if size is not None else "request body"
    message = f"{what} is over this route's limit of {limit} bytes"
    return Refused(error_response(413, "body_too_large", message, limit=limit))


def _declared_length(request: HttpRequest) -> int | None:
    raw = request.META.get("CONTENT_LENGTH")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise Refused(error_response(400, "bad_content_length", "Content-Length is not a number")) from None


async def _read(request: HttpRequest, size: int, *, in_memory: bool) -> bytes:
    # The server spools bodies over FILE_UPLOAD_MAX_MEMORY_SIZE to disk: read those in a worker thread.
    if in_memory:
        return request.read(size)
    return await sync_to_async(request.read, thread_sensitive=False)(size)


async def _read_json(request: HttpRequest, limit: int, declared: int | None) -> tuple[bytes, dict]:
    in_memory = declared is not None and declared <= django_settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    body = await _read(request, limit + 1, in_memory=in_memory)
    if len(body) > limit:
        raise _too_large(None, limit)
    try:
        payload = json.loads(body or b"null")
    except ValueError as exc:
        raise Refused(error_response(400, "invalid_json", f"the body is not valid JSON: {exc}")) from None
    except RecursionError:
        # The parser recurses once per level: a small body of brackets exhausts the stack.
        message = "the body's JSON is nested too deeply to parse"
        raise Refused(error_response(400, "invalid_json", message)) from None
    if not isinstance(payload, dict):
        raise Refused(error_response(400, "invalid_json", "the body must be a JSON object"))
    return body, payload


async def _multipart_head(request: HttpRequest, limit: int, declared: int | None) -> tuple[str, list[bytes], int, bool]:
    """Read an upload until its `model` field shows (OpenAI clients send it before the file): (model, chunks read,
    bytes read, whole body read)."""
    in_memory = declared is not None and declared <= django_settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    chunks: list[bytes] = []
    total = 0
    window = b""
    while True:
        chunk = await _read(request, CHUNK_BYTES, in_memory=in_memory)
        if not chunk:
            return "", chunks, total, True
        total += len(chunk)
        if total > limit:
            raise _too_large(None, limit)
        chunks.append(chunk)
        window = window[-SCAN_OVERLAP:] + chunk
        match = MODEL_FIELD.search(window)
        if match:
            return match.group(1).decode("utf-8", "replace").strip(), chunks, total, False


async def _upload(
    request: HttpRequest, head: list[bytes], total: int, done: bool, limit: int, in_memory: bool
) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    while not done:
        chunk = await _read(request, CHUNK_BYTES, in_memory=in_memory)
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise UpstreamError("body_too_large", f"upload over the limit of {limit} bytes")
        yield chunk


def _request_headers(request: HttpRequest) -> dict[str, str]:
    return {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}


def _response_headers(upstream: UpstreamResponse) -> list[tuple[str, str]]:
    return [(name, value) for name, value in upstream.headers if name.lower() not in HOP_BY_HOP]


async def _start_swap(request: HttpRequest, principal: Principal, decision: Decision) -> Decision:
    try:
        swap = await sync_to_async(swap_request)(
            model_key=decision.model_key,
            dry_run=False,
            actor=f"gateway:{principal.name}",
            lock_token=request.headers.get("X-Swap-Lock-Token") or None,
        )
    except SwapRefused as exc:
        code = {423: "swap_lock_held", 409: "swap_in_progress"}.get(exc.status, "swap_refused")
        return Decision(action="refuse", status=exc.status, code=code, message=exc.detail, extra=dict(exc.extra))
    logger.info("gateway: on-demand swap %s to %s for %s", swap.id, decision.model_key, principal.name)
    await sync_to_async(gateway_runtime().refresh)()
    return Decision(action="hold", swap_id=str(swap.id), model_key=decision.model_key)


async def _relay(
    upstream: UpstreamResponse, lease: Lease, spec: RouteSpec, started: float, event_stream: bool
) -> AsyncIterator[bytes]:
    service = lease.service.key
    try:
        async for chunk in upstream.chunks():
            yield chunk
    except UpstreamError as exc:
        ERRORS.labels(service, exc.reason).inc()
        logger.warning("gateway: %s answer from %s broke off: %s", spec.name, service, exc)
        if event_stream:
            error = {"error": {"message": f"the upstream answer broke off: {exc}", "type": "upstream_error"}}
            yield f"data: {json.dumps(error)}\n\n".encode()
    finally:
        try:
            await upstream.aclose()
        finally:
            lease.release()
            LATENCY.labels(service, spec.name).observe(time.perf_counter() - started)


async def _respond(upstream: UpstreamResponse, lease: Lease, spec: RouteSpec, started: float) -> HttpResponse:
    headers = _response_headers(upstream)
    content_type = next((value for name, value in headers if name.lower() == "content-type"), "")
    length = next((value for name, value in upstream.headers if name.lower() == "content-length"), None)
    event_stream = content_type.startswith("text/event-stream")
    if not event_stream and length is not None and length.isdigit() and int(length) <= BUFFER_MAX_BYTES:
        parts = [chunk async for chunk in _relay(upstream, lease, spec, started, False)]
        response: HttpResponse = HttpResponse(b"".join(parts), status=upstream.status)
    else:
        response = StreamingHttpResponse(_relay(upstream, lease, spec, started, event_stream), status=upstream.status)
        response["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer the stream either
    for name, value in headers:
        response[name] = value
    return response


async def _proxy(request: HttpRequest, spec: RouteSpec) -> HttpResponse:
    started = time.perf_counter()
    if request.method != "POST":
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; use POST")
    settings = gateway_settings()
    principal = await _authenticate(request)
    limit = settings.max_audio_bytes if spec.audio else settings.max_json_bytes
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    body: bytes | AsyncIterator[bytes]
    if spec.body == "json":
        body, payload = await _read_json(request, limit, declared)
        model = payload.get("model") if isinstance(payload.get("model"), str) else ""
    else:
        model, head, total, done = await _multipart_head(request, limit, declared)
        in_memory = declared is not None and declared <= django_settings.FILE_UPLOAD_MAX_MEMORY_SIZE
        body = _upload(request, head, total, done, limit, in_memory)
    runtime = gateway_runtime()
    decision = await runtime.route(model=model, default_kind=spec.default_kind)
    if decision.action == "swap":
        decision = await _start_swap(request, principal, decision)
    if decision.action == "hold":
        decision = await runtime.hold(model=model, default_kind=spec.default_kind, decision=decision)
    if decision.action != "serve" or decision.service is None:
        service = decision.service.key if decision.service else "-"
        REQUESTS.labels(service, spec.name, str(decision.status)).inc()
        return _refusal(decision)
    service: ServiceRoute = decision.service  # type: ignore[no-redef]
    admitted = await runtime.acquire(service=service, head_key=decision.head_key)
    if isinstance(admitted, Decision):
        REQUESTS.labels(service.key, spec.name, str(admitted.status)).inc()
        return _refusal(admitted)
    lease = admitted
    try:
        upstream = await runtime.client().send(
            method="POST", url=service.base_url + spec.path, headers=_request_headers(request), body=body
        )
    except UpstreamError as exc:
        lease.release()
        ERRORS.labels(service.key, exc.reason).inc()
        if exc.reason == "body_too_large":
            REQUESTS.labels(service.key, spec.name, "413").inc()
            raise _too_large(None, limit) from None
        status = 504 if exc.reason == "timeout" else 502
        REQUESTS.labels(service.key, spec.name, str(status)).inc()
        return error_response(status, f"upstream_{exc.reason}", f"{service.key}: {exc}", service=service.key)
    except BaseException:
        lease.release()
        raise
    FIRST_BYTE.labels(service.key, spec.name).observe(time.perf_counter() - started)
    REQUESTS.labels(service.key, spec.name, str(upstream.status)).inc()
    return await _respond(upstream, lease, spec, started)


def _route_view(spec: RouteSpec):  # type: ignore[no-untyped-def]
    @csrf_exempt
    async def view(request: HttpRequest) -> HttpResponse:
        try:
            return await _proxy(request, spec)
        except Refused as refused:
            if refused.response.status_code in (401, 403, 413, 400):
                REQUESTS.labels("-", spec.name, str(refused.response.status_code)).inc()
            return refused.response

    view.serve_without_middleware = True  # type: ignore[attr-defined]
    view.__name__ = view.__qualname__ = spec.name.replace("/", "_")
    view.__doc__ = f"POST /v1/{spec.name}, routed by model."
    return view


chat_completions = _route_view(ROUTES["chat/completions"])
completions = _route_view(ROUTES["completions"])
embeddings = _route_view(ROUTES["embeddings"])
audio_transcriptions = _route_view(ROUTES["audio/transcriptions"])
audio_translations = _route_view(ROUTES["audio/translations"])
audio_speech = _route_view(ROUTES["audio/speech"])


async def _models_data() -> list[dict]:
    runtime = gateway_runtime()
    await runtime.ensure_fresh()
    assert runtime.topology is not None and runtime.swaps is not None
    return models_list(topology=runtime.topology, swaps=runtime.swaps, on_demand=gateway_settings().on_demand)


async def _refuse_listing(request: HttpRequest) -> HttpResponse | None:
    """The answer to a model-list request that is not a GET or carries no valid credentials, else None."""
    if request.method != "GET":
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; use GET")
    try:
        await _authenticate(request)
    except Refused as refused:
        return refused.response
    return None


def _without_middleware(view):  # type: ignore[no-untyped-def]
    view.serve_without_middleware = True
    return view


@_without_middleware
@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: the union of what the services serve, each with its service and state."""
    refused = await _refuse_listing(request)
    if refused is not None:
        return refused
    REQUESTS.labels("-", "models", "200").inc()
    return JsonResponse({"object": "list", "data": await _models_data()})


@_without_middleware
@csrf_exempt
async def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    """GET /v1/models/{model}: one entry of the list, or 404 with the known names."""
    refused = await _refuse_listing(request)
    if refused is not None:
        return refused
    data = await _models_data()
    for entry in data:
        if entry["id"] == model:
            return JsonResponse(entry)
    known = [entry["id"] for entry in data]
    return error_response(404, "model_not_found", f"model {model!r} is not served here", models=known)
