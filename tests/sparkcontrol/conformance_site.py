"""A test-only URLconf and middleware for test_serving_conformance: the shapes of view and response the two HTTP
handlers must answer alike (sync and async views, streaming bodies, files, errors, short-circuits, bodies)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import connection, connections
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

# A file body over Django's ASGI chunk size (64 KiB) and FileResponse's own block size, so the chunking shows.
FILE_BYTES = bytes(range(256)) * 700
# The database connections the views used, with their thread: test_serving_conformance checks they were cleaned up.
used_connections: list[tuple[int, Any]] = []


def _describe(request: HttpRequest, kind: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "method": request.method,
        "path": request.path,
        "path_info": request.path_info,
        "query": sorted(request.GET.lists()),
        "script_name": request.META.get("SCRIPT_NAME"),
        "host": request.get_host(),
        "body_length": len(request.body),
    }


def _answer(request: HttpRequest, kind: str) -> HttpResponse:
    response = JsonResponse(_describe(request, kind))
    response["X-Conformance"] = kind
    response.set_cookie("conformance", kind, max_age=60)
    return response


def sync_view(request: HttpRequest) -> HttpResponse:
    return _answer(request, "sync")


async def async_view(request: HttpRequest) -> HttpResponse:
    return _answer(request, "async")


@csrf_exempt
def sync_form(request: HttpRequest) -> HttpResponse:
    """Reads the body as a form: Django's own limits (DATA_UPLOAD_MAX_MEMORY_SIZE, field count) apply here."""
    return JsonResponse({"fields": len(request.POST), "bytes": len(request.body)})


def _parts() -> Iterator[bytes]:
    for index in range(5):
        yield f"part {index}\n".encode()


async def _aparts() -> AsyncIterator[bytes]:
    for index in range(5):
        await asyncio.sleep(0)
        yield f"async part {index}\n".encode()


def sync_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_parts(), content_type="text/plain")


async def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_aparts(), content_type="text/plain")


endless_closed: list[bool] = []


async def _endless() -> AsyncIterator[bytes]:
    try:
        while True:
            yield b"data: token\n\n"
            await asyncio.sleep(0.01)
    finally:
        endless_closed.append(True)


async def direct_endless_stream(request: HttpRequest) -> StreamingHttpResponse:
    """An answer that never ends, served without the middleware chain (as the /v1/ gateway's streams)."""
    return StreamingHttpResponse(_endless(), content_type="text/event-stream")


direct_endless_stream.serve_without_middleware = True  # type: ignore[attr-defined]


def _record_connection() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    used_connections.append((threading.get_ident(), connections["default"]))
    return value


def sync_db(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"value": _record_connection()})


def sync_view_async_stream_db(request: HttpRequest) -> StreamingHttpResponse:
    """The shape of the swap event stream: a sync view whose async body reads the database via sync_to_async."""
    _record_connection()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(2):
            value = await sync_to_async(_record_connection)()
            yield f"value {value}\n".encode()

    return StreamingHttpResponse(body(), content_type="text/event-stream")


def sync_file(request: HttpRequest) -> FileResponse:
    return FileResponse(io.BytesIO(FILE_BYTES), content_type="application/octet-stream", filename="data.bin")


def _raiser(exc: Callable[[], BaseException]) -> tuple[Callable, Callable]:
    def view(request: HttpRequest) -> HttpResponse:
        raise exc()

    async def aview(request: HttpRequest) -> HttpResponse:
        raise exc()

    return view, aview


sync_404, async_404 = _raiser(lambda: Http404("no such thing"))
sync_403, async_403 = _raiser(lambda: PermissionDenied("not yours"))
sync_400, async_400 = _raiser(lambda: SuspiciousOperation("odd request"))
sync_500, async_500 = _raiser(lambda: RuntimeError("view failed"))


class ConformanceMiddleware:
    """Sync-only (Django adapts it in an async stack): answers or raises before the view for a few paths, and
    marks every response it passes back."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/mw/short-circuit/":
            return HttpResponse("answered by the middleware", status=202)
        if request.path == "/mw/403/":
            raise PermissionDenied("middleware says no")
        if request.path == "/mw/404/":
            raise Http404("middleware found nothing")
        if request.path == "/mw/500/":
            raise RuntimeError("middleware failed")
        response = self.get_response(request)
        response["X-Conformance-Middleware"] = "passed"
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, LookupError):
            return HttpResponse(json.dumps({"handled": str(exception)}), status=409, content_type="application/json")
        return None


def sync_lookup_error(request: HttpRequest) -> HttpResponse:
    raise LookupError("turned into 409 by process_exception")


urlpatterns = [
    path("sync/", sync_view),
    path("async/", async_view),
    path("sync/naïve/", sync_view),
    path("async/naïve/", async_view),
    path("sync/form/", sync_form),
    path("sync/stream/", sync_stream),
    path("async/stream/", async_stream),
    path("sync/db/", sync_db),
    path("sync/stream-db/", sync_view_async_stream_db),
    path("sync/file/", sync_file),
    path("sync/404/", sync_404),
    path("async/404/", async_404),
    path("sync/403/", sync_403),
    path("async/403/", async_403),
    path("sync/400/", sync_400),
    path("async/400/", async_400),
    path("sync/500/", sync_500),
    path("async/500/", async_500),
    path("sync/lookup/", sync_lookup_error),
    path("api/echo/", sync_form),
    path("direct/endless/", direct_endless_stream),
]
