"""Error pages: JSON for API and gateway paths (every API error is JSON), Django's default elsewhere."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

JSON_PREFIXES = ("/api/", "/v1/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(JSON_PREFIXES):
        return JsonResponse({"detail": f"no route for {request.method} {request.path}"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(JSON_PREFIXES):
        return JsonResponse({"detail": "internal error; the server log has the details"}, status=500)
    return defaults.server_error(request)
