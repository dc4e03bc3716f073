"""Request body limits, applied before any view reads the body."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
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
