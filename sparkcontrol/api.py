"""The one NinjaAPI: every app's router, mounted under /api/, with central error handling.

Every error is JSON `{"detail": "<message naming the field>"}`; bad input is never a 500.
Timestamps are ISO 8601 with the offset (`2026-06-17T12:00:00.123456+00:00`), as the services write them; the
schema declares how to authenticate (a Bearer token, or the session cookie with its CSRF token).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.openapi.schema import OpenAPISchema
from ninja.renderers import JSONRenderer
from ninja.responses import NinjaJSONEncoder

from actions.api import router as actions_router
from catalog.api import router as catalog_router
from cluster.api import router as cluster_router
from coordination.api import router as coordination_router
from modelfiles.api import router as modelfiles_router
from sparkcontrol.bodylimit import PUBLIC_API_PATHS
from swaps.api import router as swaps_router
from telemetry.api import router as telemetry_router

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: `manage.py apitoken create NAME --scope read|operate|admin`.",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "sessionid",
        "description": "A signed-in session (the dashboard); unsafe methods also need X-CSRFToken.",
    },
}


class ApiJSONEncoder(NinjaJSONEncoder):
    """Datetimes as `isoformat()` (offset `+00:00`, microseconds), like the strings the services build; Django's
    encoder would write `Z` and milliseconds, so one answer would mix two formats."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        return super().default(o)


class ApiRenderer(JSONRenderer):
    encoder_class = ApiJSONEncoder


class SparkControlAPI(NinjaAPI):
    """The NinjaAPI, with its security schemes in the schema (the auth callables are plain ones ninja cannot see)."""

    def get_openapi_schema(self, **kwargs: Any) -> OpenAPISchema:
        schema = super().get_openapi_schema(**kwargs)
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        for path, operations in schema.get("paths", {}).items():
            if path.rstrip("/") in PUBLIC_API_PATHS:
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"session": []}]
                operation.setdefault("responses", {}).setdefault("401", {"description": "Unauthorized"})
        return schema


api = SparkControlAPI(
    title="Spark Control API",
    version="1",
    description="Swap the model vLLM serves on a DGX Spark cluster, safely, from people and automation.",
    docs_url="/docs",
    renderer=ApiRenderer(),
)


def _location(loc: list) -> str:
    parts = [str(part) for part in loc if part not in ("body", "payload")]
    return ".".join(parts) or "body"


@api.exception_handler(NinjaValidationError)
def on_validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [{"field": _location(err.get("loc", [])), "message": err.get("msg", "invalid")} for err in exc.errors]
    detail = "; ".join(f"{err['field']}: {err['message']}" for err in errors) or "invalid request"
    return api.create_response(request, {"detail": detail, "errors": errors}, status=422)


@api.exception_handler(DjangoValidationError)
def on_model_validation_error(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    if hasattr(exc, "error_dict"):
        errors = [{"field": name, "message": msg} for name, msgs in exc.message_dict.items() for msg in msgs]
    else:
        errors = [{"field": "__all__", "message": msg} for msg in exc.messages]
    detail = "; ".join(f"{err['field']}: {err['message']}" for err in errors)
    return api.create_response(request, {"detail": detail, "errors": errors}, status=422)


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return api.create_response(request, {"detail": f"request body is too large: {exc}"}, status=413)


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = api.create_response(
        request, {"detail": "authentication required: a session or 'Authorization: Bearer <token>'"}, status=401
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc.message)}, status=exc.status_code)


@api.get("/health", auth=None, tags=["health"])
def health(request: HttpRequest) -> dict:
    """Is Spark Control itself up, and is its database reachable. Needs no credentials."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - a health check reports any database failure
        return api.create_response(request, {"status": "down", "database": str(exc)[:200]}, status=503)
    return {"status": "ok", "database": database}


api.add_router("/", catalog_router)
api.add_router("/", cluster_router)
# Coordination first: its /swap/lock must win over the swaps router's /swap/{id}.
api.add_router("/", coordination_router)
api.add_router("/", swaps_router)
api.add_router("/", telemetry_router)
api.add_router("/", actions_router)
api.add_router("/", modelfiles_router)
