"""Request body limits on every route, enforced before Django reads the body.

Every URL pattern of the project (admin, dashboard, API, /metrics, whatever is added later) is turned into a
concrete path and sent a body one byte over its limit, once with a Content-Length and once chunked, through the
real ASGI application: each answers 413 with a JSON message. The gateway (/v1/) streams uploads and keeps its own
per-route limits: without credentials it refuses before reading anything.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from sparkcontrol.asgi import application
from sparkcontrol.bodylimit import body_limit_for

pytestmark = pytest.mark.django_db(transaction=True)

SAMPLES = {
    "uuid": str(uuid.UUID(int=7)),
    "uuidstr": str(uuid.UUID(int=7)),
    "int": "1",
    "slug": "x",
    "str": "x",
    "path": "x/y",
}


def _from_route(route: str) -> str:
    return re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLES.get(m.group(1) or "str", "x"), route)


def _from_regex(regex: str) -> str:
    """A string the admin's regexes match: the first alternative of a group, '1' for an open-ended one."""

    def group(match: re.Match[str]) -> str:
        body = match.group(1)
        first = body.split("|")[0]
        return first if re.fullmatch(r"[\w./-]+", first) else "1"

    text = regex.lstrip("^").rstrip("$").replace(r"\Z", "")
    text = re.sub(r"\(\?P<\w+>([^)]*)\)", group, text)
    return text.replace("\\", "")


def _patterns(patterns: list, prefix: str = "") -> Iterator[str]:
    for entry in patterns:
        raw = str(entry.pattern)
        part = _from_regex(raw) if raw.startswith("^") or raw.endswith("$") else _from_route(raw)
        if isinstance(entry, URLResolver):
            yield from _patterns(entry.url_patterns, prefix + part)
        elif isinstance(entry, URLPattern):
            yield "/" + prefix + part


def every_route() -> list[str]:
    paths = sorted(set(_patterns(get_resolver().url_patterns)))
    for path in paths:
        resolve(path)  # each sample reaches a real route, or this raises Resolver404
    return paths


ROUTES = every_route()


def _over(path: str) -> int:
    return body_limit_for(path) + 1


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        size = min(64 * 1024, total - sent)
        sent += size
        yield b"x" * size


async def _post(path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return await client.post(path, **kwargs)


def test_every_route_is_enumerated():
    assert "/api/swap" in ROUTES and "/metrics" in ROUTES and "/admin/login/" in ROUTES
    assert any(path.startswith("/admin/catalog/modelentry/") for path in ROUTES)
    assert len(ROUTES) > 40


@pytest.mark.parametrize("path", [p for p in ROUTES if body_limit_for(p) is not None])
async def test_a_declared_body_over_the_limit_is_refused_with_413(path):
    limit = body_limit_for(path)
    response = await _post(path, content=b"x" * (limit + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, (path, response.status_code, response.text[:200])
    assert response.json()["limit"] == limit


@pytest.mark.parametrize("path", [p for p in ROUTES if body_limit_for(p) is not None])
async def test_a_chunked_body_over_the_limit_is_refused_with_413(path):
    response = await _post(path, content=_chunks(_over(path)), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, (path, response.status_code, response.text[:200])


async def test_gateway_routes_refuse_an_unauthenticated_upload():
    for path in [p for p in ROUTES if body_limit_for(p) is None]:
        response = await _post(path, content=_chunks(8 * 1024 * 1024), headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (path, response.status_code)


async def test_bodies_within_the_limit_reach_the_view():
    limit = settings.API_MAX_BODY_BYTES
    body = b'{"model": "tiny", "pad": "' + b"x" * (limit - 40) + b'"}'
    assert len(body) <= limit
    declared = await _post("/api/swap", content=body, headers={"Content-Type": "application/json"})
    chunked = await _post("/api/swap", content=_chunks(limit), headers={"Content-Type": "application/json"})
    assert declared.status_code == chunked.status_code == 401  # the view ran: it asked for credentials


async def test_a_bad_content_length_is_a_400():
    response = await _post("/api/swap", content=b"{}", headers={"Content-Length": "abc"})
    assert response.status_code == 400
