"""Request body limits, applied before any view reads the body, and the Content-Security-Policy header."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse


class BodySizeLimitMiddleware:
    """Refuse API bodies over the limit with 413 and a JSON message, using the declared Content-Length.

    Bodies without a Content-Length (chunked) are capped by DATA_UPLOAD_MAX_MEMORY_SIZE when read, and the
    API's exception handler turns that into the same 413. The gateway (/v1/) sets its own per-route limits.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
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
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """Set a Content-Security-Policy on every response that has none: scripts only from this origin, no inline.

    The dashboard needs nothing else: its scripts and styles are static files, its data arrives as JSON
    (fetch and the websocket, same origin) and is rendered through DOM text APIs. `ws:`/`wss:` are named
    because browsers have not always matched websocket URLs to `'self'`. The admin keeps its few inline
    styles (a `<style>` block on change lists); its scripts are static files too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

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

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy(request)
        return response
