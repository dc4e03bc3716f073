"""Request body limits, the Content-Security-Policy header, and static files.

Every middleware here works both ways (sync and async): under ASGI a sync-only middleware puts each request
through a hop to Django's one sync thread, which serialises concurrent requests (the gateway's streams
among them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse
from whitenoise.middleware import WhiteNoiseMiddleware


class HybridMiddleware:
    """A middleware that runs natively in sync and async stacks: `before` may answer early, `after` may edit."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def before(self, request: HttpRequest) -> HttpResponse | None:
        return None

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        return response

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.before(request) or self.after(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        early = self.before(request)
        if early is not None:
            return early
        return self.after(request, await self.get_response(request))


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, without the sync hop for the requests that are not static files."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def _static_file(self, request: HttpRequest) -> Any:
        if self.autorefresh:
            return self.find_file(request.path_info)
        return self.files.get(request.path_info)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        static_file = self._static_file(request)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)


class BodySizeLimitMiddleware(HybridMiddleware):
    """Refuse API bodies over the limit with 413 and a JSON message, using the declared Content-Length.

    Bodies without a Content-Length (chunked) are capped by DATA_UPLOAD_MAX_MEMORY_SIZE when read, and the
    API's exception handler turns that into the same 413. The gateway (/v1/) sets its own per-route limits.
    """

    def before(self, request: HttpRequest) -> HttpResponse | None:
        if request.path.startswith("/api/"):
            limit = settings.API_MAX_BODY_BYTES
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse({"detail": "Content-Length is not a number"}, status=400)
            if length > limit:
                return JsonResponse(
                    {"detail": f"request body of {length} bytes is over the limit of {limit} bytes", "limit": limit},
                    status=413,
                )
        return None


class ContentSecurityPolicyMiddleware(HybridMiddleware):
    """Set a Content-Security-Policy on every response that has none: scripts only from this origin, no inline.

    The dashboard needs nothing else: its scripts and styles are static files, its data arrives as JSON
    (fetch and the websocket, same origin) and is rendered through DOM text APIs. `ws:`/`wss:` are named
    because browsers have not always matched websocket URLs to `'self'`. The admin keeps its few inline
    styles (a `<style>` block on change lists); its scripts are static files too.
    """

    @staticmethod
    def policy(request: HttpRequest) -> str:
        try:
            host = request.get_host()  # validated against ALLOWED_HOSTS, so it cannot smuggle in a directive
        except DisallowedHost:
            host = ""
        sockets = f" ws://{host} wss://{host}" if host else ""
        styles = "'self' 'unsafe-inline'" if request.path.startswith("/admin/") else "'self'"
        directives = [
            "default-src 'self'",
            "script-src 'self'",
            f"style-src {styles}",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self'{sockets}",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
        return "; ".join(directives)

    def after(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy(request)
        return response
