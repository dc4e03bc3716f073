"""`serve`'s HTTP handler (`PooledSyncHandler`) answers exactly as Django's own `ASGIHandler` does.

The pooled handler reuses private parts of Django's handler (decision 0030), so a Django upgrade could change
one without the other. Here the same requests go through both, in process, as raw ASGI messages, each wrapped in
the body limit as `sparkcontrol.asgi` wraps it, and everything observable must match: the messages sent (status,
headers in order, body chunks), the request_started / request_finished / got_request_exception signals, and what
happens to the database connections the views used. A failure here after an upgrade means: fix
`sparkcontrol.serving` for the new Django, or serve with `SPARKCONTROL_FAST_HANDLER=0` until it is fixed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.test import override_settings

from sparkcontrol.bodylimit import BodyLimit
from sparkcontrol.serving import PooledSyncHandler
from tests.sparkcontrol import conformance_site

SITE = "tests.sparkcontrol.conformance_site"
pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class Case:
    """One request: `body` is sent in these chunks (more_body on all but the last); `disconnect` = the client
    went away before its body was in."""

    path: str
    method: str = "GET"
    query: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: tuple[bytes, ...] = (b"",)
    disconnect: bool = False
    host: bytes = b"127.0.0.1"
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or f"{self.method} {self.path}?{self.query.decode()}"


@dataclass
class Outcome:
    messages: list[dict[str, Any]]
    signals: dict[str, int]
    connections_closed: list[bool] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        return self.messages[0]["status"] if self.messages else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


class SignalCounter:
    def __init__(self) -> None:
        self.counts = {"request_started": 0, "request_finished": 0, "got_request_exception": 0}
        self.receivers = {name: self._receiver(name) for name in self.counts}

    def _receiver(self, name: str):  # type: ignore[no-untyped-def]
        def receive(sender: Any, **kwargs: Any) -> None:
            self.counts[name] += 1

        return receive

    def __enter__(self) -> SignalCounter:
        for name, receiver in self.receivers.items():
            getattr(signals, name).connect(receiver, dispatch_uid=f"conformance-{name}")
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.receivers:
            getattr(signals, name).disconnect(dispatch_uid=f"conformance-{name}")

    def take(self) -> dict[str, int]:
        counts = dict(self.counts)
        for name in self.counts:
            self.counts[name] = 0
        return counts


def _scope(case: Case) -> dict[str, Any]:
    headers = [(b"host", case.host), *case.headers]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": case.method,
        "scheme": "http",
        "path": case.path,
        "raw_path": case.path.encode("utf-8"),  # as a server gives it: percent-decoding is the path's, not ours
        "query_string": case.query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9999),
    }


# Normalised, and why: the CSRF token is random per response (a new cookie, and a newly masked form field), so
# its value alone may differ between the two answers; and the clock moves between them, so an HTTP date (the
# Expires header of a never-cached page, a cookie's expiry) may be a second apart. Nothing else is: neither
# handler adds a Date (the server does), and the pooled handler must keep the header order Django's gives.
CSRF_COOKIE = re.compile(rb"^(csrftoken=)[A-Za-z0-9]+(;.*)$")
CSRF_FIELD = re.compile(rb'(name="csrfmiddlewaretoken" value=")[A-Za-z0-9]+(")')
HTTP_DATE = re.compile(rb"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


def _normalised_header(name: bytes, value: bytes) -> bytes:
    if name.lower() == b"set-cookie":
        value = CSRF_COOKIE.sub(rb"\1<random>\2", value)
    if name.lower() in (b"set-cookie", b"expires"):
        value = HTTP_DATE.sub(b"<date>", value)
    return value


def _normalised(message: dict[str, Any]) -> dict[str, Any]:
    message = dict(message)
    if message["type"] == "http.response.start":
        message["headers"] = [(name, _normalised_header(name, value)) for name, value in message["headers"]]
    elif "body" in message:
        message["body"] = CSRF_FIELD.sub(rb"\1<random>\2", message["body"])
    return message


async def _exchange(app: Any, case: Case, counter: SignalCounter) -> Outcome:
    sent: list[dict[str, Any]] = []
    if case.disconnect:
        incoming = [{"type": "http.disconnect"}]
    else:
        last = len(case.body) - 1
        incoming = [
            {"type": "http.request", "body": chunk, "more_body": index < last} for index, chunk in enumerate(case.body)
        ]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # the client stays connected; Django's disconnect listener is cancelled
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    conformance_site.used_connections.clear()
    await asyncio.wait_for(app(_scope(case), receive, send), timeout=60)
    closed = [wrapper.connection is None for _, wrapper in conformance_site.used_connections]
    return Outcome(messages=[_normalised(m) for m in sent], signals=counter.take(), connections_closed=closed)


def _applications(*, wrapped: bool = True) -> dict[str, Any]:
    """Django's handler and serve's, built now (under the test's settings), each as sparkcontrol.asgi stacks it."""
    django_handler = ASGIHandler()
    pooled = PooledSyncHandler(threads=2, async_handler=ASGIHandler())
    if not wrapped:
        return {"django": django_handler, "serve": pooled}
    return {"django": BodyLimit(django_handler), "serve": BodyLimit(pooled)}


def _run(cases: Iterable[Case], *, wrapped: bool = True) -> list[tuple[Case, Outcome, Outcome]]:
    """Every case through both handlers on one event loop (the pool's threads live as long as the loop)."""
    applications = _applications(wrapped=wrapped)

    async def main() -> list[tuple[Case, Outcome, Outcome]]:
        results = []
        with SignalCounter() as counter:
            for case in cases:
                django = await _exchange(applications["django"], case, counter)
                served = await _exchange(applications["serve"], case, counter)
                results.append((case, django, served))
        return results

    return asyncio.run(main())


def _assert_alike(results: list[tuple[Case, Outcome, Outcome]]) -> dict[str, Outcome]:
    for case, django, served in results:
        assert served.messages == django.messages, f"{case.method} {case.path}: the answers differ"
        assert served.signals == django.signals, f"{case.method} {case.path}: the signals differ"
        assert served.connections_closed == django.connections_closed, f"{case.method} {case.path}: connections"
    return {case.key: django for case, django, _ in results}


SITE_SETTINGS = {
    "ROOT_URLCONF": SITE,
    "DEBUG": False,
}


def _site_middleware() -> list[str]:
    from django.conf import settings

    return [*settings.MIDDLEWARE, "tests.sparkcontrol.conformance_site.ConformanceMiddleware"]


def test_views_streams_errors_and_middleware_answer_alike():
    cases = [
        Case("/sync/", query=b"a=1&b=%C3%A9&a=2"),
        Case("/async/", query=b"a=1&b=%C3%A9&a=2"),
        Case("/sync/naïve/", query=b"x=%E2%9C%93"),
        Case("/async/naïve/"),
        Case("/sync/", method="HEAD"),
        Case("/async/", method="HEAD"),
        Case("/sync/", method="POST", label="csrf refused"),
        Case("/sync/form/", method="POST", body=(b'{"a":', b" 1}"), headers=((b"content-type", b"application/json"),)),
        Case("/sync/stream/"),
        Case("/async/stream/"),
        Case("/sync/file/"),
        Case("/sync/404/"),
        Case("/async/404/"),
        Case("/sync/403/"),
        Case("/async/403/"),
        Case("/sync/400/"),
        Case("/async/400/"),
        Case("/sync/500/"),
        Case("/async/500/"),
        Case("/sync/lookup/"),
        Case("/nowhere/"),
        Case("/sync"),  # CommonMiddleware's redirect to the slash
        Case("/mw/short-circuit/"),
        Case("/mw/403/"),
        Case("/mw/404/"),
        Case("/mw/500/"),
        Case("/sync/", host=b"evil.example", label="disallowed host"),  # a SuspiciousOperation: 400
    ]
    with override_settings(**SITE_SETTINGS, MIDDLEWARE=_site_middleware()):
        answers = _assert_alike(_run(cases))

    # What both said is what Django says for each: the comparison above is not between two broken answers.
    status = {key: outcome.status for key, outcome in answers.items()}
    assert status["GET /sync/?a=1&b=%C3%A9&a=2"] == 200
    assert status["GET /async/naïve/?"] == 200
    assert b'"path": "/sync/na\\u00efve/"' in answers["GET /sync/naïve/?x=%E2%9C%93"].body
    assert b'"query": [["a", ["1", "2"]], ["b", ["\\u00e9"]]]' in answers["GET /sync/?a=1&b=%C3%A9&a=2"].body
    assert status["csrf refused"] == 403
    assert status["POST /sync/form/?"] == 200 and answers["POST /sync/form/?"].body == b'{"fields": 0, "bytes": 8}'
    assert answers["GET /sync/stream/?"].body == b"".join(f"part {i}\n".encode() for i in range(5))
    assert answers["GET /async/stream/?"].body == b"".join(f"async part {i}\n".encode() for i in range(5))
    file_answer = answers["GET /sync/file/?"]
    assert file_answer.body == conformance_site.FILE_BYTES
    assert len([m for m in file_answer.messages if m.get("body")]) == 3  # 64 KiB chunks, as Django sends files
    for kind in ("sync", "async"):
        assert status[f"GET /{kind}/404/?"] == 404
        assert status[f"GET /{kind}/403/?"] == 403
        assert status[f"GET /{kind}/400/?"] == 400
        assert status[f"GET /{kind}/500/?"] == 500
        assert answers[f"GET /{kind}/500/?"].signals["got_request_exception"] == 1
    assert status["GET /sync/lookup/?"] == 409
    assert status["GET /nowhere/?"] == 404
    assert status["GET /sync?"] == 301
    assert (status["GET /mw/short-circuit/?"], status["GET /mw/403/?"], status["GET /mw/404/?"]) == (202, 403, 404)
    assert status["GET /mw/500/?"] == 500
    assert status["disallowed host"] == 400
    for key, outcome in answers.items():
        assert outcome.signals["request_started"] == 1 and outcome.signals["request_finished"] == 1, key


def test_a_client_gone_before_its_body_gets_no_answer_and_starts_no_request():
    with override_settings(**SITE_SETTINGS, MIDDLEWARE=_site_middleware()):
        results = _run([Case("/sync/", method="POST", body=(b"partial",), disconnect=True)])
    _assert_alike(results)
    (_, django, _) = results[0]
    assert django.messages == [] and django.signals["request_started"] == 0


@pytest.mark.parametrize("max_age", [0, 600])
def test_database_connections_are_cleaned_up_alike(max_age):
    """close_old_connections at request_started / request_finished: with CONN_MAX_AGE 0 each connection a view
    used is closed when its request ends (streaming bodies included); with a maximum age it stays open."""
    config = connections.settings["default"]
    previous = config.get("CONN_MAX_AGE", 0)
    config["CONN_MAX_AGE"] = max_age
    try:
        cases = [Case("/sync/db/"), Case("/sync/stream-db/"), Case("/sync/db/")]
        with override_settings(**SITE_SETTINGS, MIDDLEWARE=_site_middleware()):
            results = _run(cases)
    finally:
        config["CONN_MAX_AGE"] = previous
    _assert_alike(results)
    for case, django, _ in results:
        assert django.status == 200
        expected = 1 if case.path == "/sync/db/" else 3
        assert django.connections_closed == [max_age == 0] * expected, case.path
    assert results[1][1].body == b"value 1\nvalue 1\n"


def test_body_size_limits_answer_alike(settings):
    """The body limit in front of both (as sparkcontrol.asgi stacks it) and Django's own limits behind it."""
    settings.API_MAX_BODY_BYTES = 1024
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    form = ((b"content-type", b"application/x-www-form-urlencoded"),)

    def declared(size: int) -> tuple[tuple[bytes, bytes], ...]:
        return (*form, (b"content-length", str(size).encode()))

    at_api_limit = b"x" * 1024
    at_form_limit = b"a=" + b"x" * 4094
    many_fields = b"&".join(b"f%d=1" % i for i in range(11))
    cases = [
        Case("/api/echo/", "POST", body=(at_api_limit,), headers=declared(1024), label="api at limit"),
        Case("/api/echo/", "POST", body=(at_api_limit + b"x",), headers=declared(1025), label="api over"),
        Case("/api/echo/", "POST", body=(at_api_limit[:600],) * 2, headers=form, label="api chunked over"),
        Case("/api/echo/", "POST", body=(b"x",), headers=((b"content-length", b"lots"),), label="api bad length"),
        Case("/sync/form/", "POST", body=(at_form_limit,), headers=declared(4096), label="form at limit"),
        Case("/sync/form/", "POST", body=(at_form_limit + b"x",), headers=declared(4097), label="form over"),
        Case("/sync/form/", "POST", body=(at_form_limit + b"x",), headers=form, label="form chunked over"),
        Case("/sync/form/", "POST", body=(many_fields,), headers=form, label="form 11 fields"),
    ]
    with override_settings(**SITE_SETTINGS, MIDDLEWARE=_site_middleware()):
        at_the_edge = _assert_alike(_run(cases))
        # Without the edge wrapper: Django's own checks (BodySizeLimitMiddleware, DATA_UPLOAD_MAX_*) in both.
        behind_it = _assert_alike(_run(cases, wrapped=False))
    assert {key: outcome.status for key, outcome in at_the_edge.items()} == {
        "api at limit": 200,
        "api over": 413,
        "api chunked over": 413,
        "api bad length": 400,
        "form at limit": 200,
        "form over": 413,
        "form chunked over": 413,
        "form 11 fields": 400,
    }
    # Behind the edge: the API middleware refuses a declared size over its limit (413) and a bad length (400);
    # a chunked API body is read whole and taken; a form body over DATA_UPLOAD_MAX_MEMORY_SIZE, or an 11th
    # field, is a SuspiciousOperation (400).
    assert {key: outcome.status for key, outcome in behind_it.items()} == {
        "api at limit": 200,
        "api over": 413,
        "api chunked over": 200,
        "api bad length": 400,
        "form at limit": 200,
        "form over": 400,
        "form chunked over": 400,
        "form 11 fields": 400,
    }


def test_the_project_routes_answer_alike(model_factory):
    """A few real routes under the real settings and middleware: health (GET and HEAD), a 404 under /api/, a
    401, the admin sign-in page (answered from the login pool, with a CSRF cookie), and a finished swap's event
    stream (a sync view with an async body that reads the database)."""
    from accounts.tokens import apitoken_create
    from swaps.models import SwapState
    from swaps.services import swap_events_append, swap_finish, swap_request

    model_factory("tiny", repo="sim/tiny-model")
    swap = swap_request(model_key="tiny", dry_run=False, actor="conformance")
    swap_events_append(swap=swap, items=[("log", "line a"), ("log", "line b")])
    swap_finish(swap=swap, state=SwapState.READY)
    _, token = apitoken_create(name="conformance-read", scope="read")
    bearer = ((b"authorization", f"Bearer {token}".encode()),)
    cases = [
        Case("/api/health"),
        Case("/api/health", method="HEAD"),
        Case("/api/no-such-route"),
        Case("/api/swap/lock"),
        Case("/admin/login/", query=b"next=/admin/"),
        Case("/"),
        Case(f"/api/swap/{swap.id}/stream", headers=bearer, label="stream"),
        Case(f"/api/swap/{swap.id}/stream", headers=(*bearer, (b"last-event-id", b"2")), label="stream resumed"),
    ]
    answers = _assert_alike(_run(cases))
    stream, resumed = answers.pop("stream"), answers.pop("stream resumed")
    assert stream.status == resumed.status == 200
    assert [line for line in stream.body.split(b"\n") if line.startswith(b"id: ")] == [
        b"id: 1",
        b"id: 2",
        b"id: 3",
        b"id: 4",
    ]
    assert [line for line in resumed.body.split(b"\n") if line.startswith(b"id: ")] == [b"id: 3", b"id: 4"]
    status = {key: outcome.status for key, outcome in answers.items()}
    assert status == {
        "GET /api/health?": 200,
        "HEAD /api/health?": 405,  # the route takes GET only: ninja says so alike
        "GET /api/no-such-route?": 404,
        "GET /api/swap/lock?": 401,
        "GET /admin/login/?next=/admin/": 200,
        "GET /?": 302,
    }
    login = answers["GET /admin/login/?next=/admin/"]
    assert b'name="csrfmiddlewaretoken" value="<random>"' in login.body
    assert any(value.startswith(b"csrftoken=<random>;") for name, value in login.messages[0]["headers"])


def test_api_reads_with_a_bearer_token_served_without_the_middleware_chain_answer_alike(model_factory):
    """GET and HEAD of sync API routes with an Authorization header and no cookie skip the middleware chain but
    its header layers and body limit (`_respond_chainless`): the same answers, headers in the same order, signals
    and connection housekeeping as through Django's handler and the whole chain; with a cookie, or a write, or a
    route that is not a django-ninja operation, serve runs the chain too."""
    from accounts.tokens import apitoken_create
    from swaps.services import swap_request

    model_factory("tiny", repo="sim/tiny-model")
    swap_request(model_key="tiny", dry_run=True, actor="conformance")
    _, token = apitoken_create(name="conformance-chainless", scope="read")
    bearer = (b"authorization", f"Bearer {token}".encode())
    cases = [
        Case("/api/swap/lock", headers=(bearer,), label="lock"),
        Case("/api/swap/lock", method="HEAD", headers=(bearer,), label="lock HEAD"),
        Case("/api/swaps", query=b"limit=2", headers=(bearer,), label="swaps"),
        Case("/api/swaps", query=b"limit=nope", headers=(bearer,), label="bad query"),
        Case("/api/swap/lock", headers=((b"authorization", b"Bearer sct_nope"),), label="unknown token"),
        Case("/api/swap/lock", headers=((b"authorization", b"Basic eDp5"),), label="not bearer"),
        Case("/api/swap/lock", headers=(bearer,), host=b"evil.example", label="bad host"),
        Case("/api/swap/lock", headers=(bearer, (b"cookie", b"sessionid=nope")), label="with a cookie"),
        Case("/api/swap/lock", method="DELETE", headers=(bearer,), label="write"),
        Case("/api/no-such-route", headers=(bearer,), label="no route"),
        Case("/api/health", headers=(bearer,), label="public"),
    ]
    answers = _assert_alike(_run(cases))
    assert {key: outcome.status for key, outcome in answers.items()} == {
        "lock": 200,
        "lock HEAD": 405,
        "swaps": 200,
        "bad query": 422,
        "unknown token": 401,
        "not bearer": 401,
        "bad host": 400,
        "with a cookie": 200,
        "write": 403,
        "no route": 404,
        "public": 200,
    }
    _assert_security_headers(answers["lock"])


def _assert_security_headers(outcome: Outcome) -> None:
    """The header layers ran on a path that skips the rest of the chain: CSP, frame options, Content-Length."""
    headers = {name.lower(): value for name, value in outcome.messages[0]["headers"]}
    assert headers[b"content-security-policy"].startswith(b"default-src 'self'")
    assert headers[b"x-frame-options"] == b"DENY" and b"content-length" in headers


def test_only_bearer_reads_of_api_operations_skip_the_chain():
    from sparkcontrol.serving import _chainless_api_request

    def scope(method: str, path: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
        return {"method": method, "path": path, "headers": [(b"host", b"127.0.0.1"), *headers]}

    bearer = (b"authorization", b"Bearer x")
    assert _chainless_api_request(scope("GET", "/api/swap/lock", bearer))
    assert _chainless_api_request(scope("HEAD", "/api/swaps", bearer))
    assert not _chainless_api_request(scope("GET", "/api/swap/lock"))
    assert not _chainless_api_request(scope("GET", "/api/swap/lock", bearer, (b"cookie", b"sessionid=x")))
    assert not _chainless_api_request(scope("POST", "/api/swap/lock", bearer))
    assert not _chainless_api_request(scope("GET", "/admin/", bearer))
    handler = PooledSyncHandler(threads=1, async_handler=ASGIHandler())
    assert handler._is_api_operation("/api/swap/lock") and handler._is_api_operation("/api/health")
    assert not handler._is_api_operation("/api/docs") and not handler._is_api_operation("/api/no-such-route")


def test_gateway_routes_served_without_the_middleware_chain_answer_alike(model_factory):
    """The /v1/ views are called without the middleware chain (`serve_without_middleware`) when a request has an
    Authorization header: the same answers, headers in the same order, signals and host check as through
    Django's handler and the whole chain (without the header, both run the chain: a session may be read)."""
    from accounts.tokens import apitoken_create

    model_factory("tiny", repo="sim/tiny-model")
    _, token = apitoken_create(name="conformance-inference", scope="inference")
    bearer = (b"authorization", f"Bearer {token}".encode())
    json_body = (b"content-type", b"application/json")
    cases = [
        Case("/v1/models", label="no token"),
        Case("/v1/models", headers=(bearer,), label="models"),
        Case("/v1/models", headers=(bearer,), host=b"evil.example", label="bad host"),
        Case("/v1/chat/completions", label="wrong method"),
        Case(
            "/v1/chat/completions",
            method="POST",
            headers=(bearer, json_body),
            body=(b'{"model": "no-such-model", "messages": []}',),
            label="unknown model",
        ),
        Case("/v1/chat/completions", method="POST", headers=(bearer, json_body), body=(b"{",), label="bad JSON"),
    ]
    answers = _assert_alike(_run(cases))
    assert {key: outcome.status for key, outcome in answers.items()} == {
        "no token": 401,
        "models": 200,
        "bad host": 400,
        "wrong method": 405,
        "unknown model": 404,
        "bad JSON": 400,
    }
    _assert_security_headers(answers["models"])


def test_a_view_served_without_the_chain_ends_when_its_client_goes_away():
    """As Django's handler does: the client's disconnect cancels the view, and its endless answer is closed."""
    conformance_site.endless_closed.clear()
    case = Case("/direct/endless/", headers=((b"authorization", b"Bearer x"),))
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        handler = PooledSyncHandler(threads=1, async_handler=ASGIHandler())
        incoming = [{"type": "http.request", "body": b"", "more_body": False}]
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if len(sent) == 3:
                gone.set()

        await asyncio.wait_for(handler(_scope(case), receive, send), timeout=10)

    with override_settings(**SITE_SETTINGS, MIDDLEWARE=_site_middleware()):
        asyncio.run(main())
    assert sent[0]["status"] == 200
    assert 3 <= len(sent) < 10
    assert conformance_site.endless_closed == [True]
