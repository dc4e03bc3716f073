"""Schemathesis against the project's own OpenAPI schema (`/api/openapi.json`), through the whole WSGI stack
(middleware, CSRF, auth): with an admin token no 5xx and no response that violates its documented schema; without
credentials, and with credentials that lack the scope, nothing but a refusal (no route accepts an
unauthenticated write, nor a read-scope one).

The gateway (/v1/) has no OpenAPI document of its own; the OpenAI request shapes it accepts are described below
and fuzzed the same way with an inference token. Generated values include the edges that break parsers and
converters: date-times at the ends of the calendar with the widest offsets, integers past 64 bits, unicode that is
legal JSON but odd, and bodies nested far deeper than any client needs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from accounts.tokens import apitoken_create

EXAMPLES = 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# The calendar's ends with the widest offsets (converting them to UTC overflows), besides ordinary date-times.
EDGE_DATETIMES = [
    "9999-12-31T23:59:59-23:59",
    "9999-12-31T23:59:59.999999+00:00",
    "0001-01-01T00:00:00+23:59",
    "0001-01-01T00:00:00Z",
    "2038-01-19T03:14:08Z",
    "1970-01-01T00:00:00-00:00",
]
schemathesis.openapi.format(
    "date-time",
    st.one_of(
        st.sampled_from(EDGE_DATETIMES),
        st.datetimes(min_value=datetime(1, 1, 1), timezones=st.just(UTC)).map(datetime.isoformat),
    ),
)
DEEP = 1000
# Values that are legal JSON but that code converting or storing them may not expect.
HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [
            10**30,
            -(2**63) - 1,
            2**64,
            1e308,
            -1e-308,
            "\u202e\u0000\ufeff\U0010ffff",
            "\U0001d518\U0001d52b\u0301" * 200,
            "9" * 5000,
            "",
            "../../etc/passwd",
        ]
    ),
    st.sampled_from(EDGE_DATETIMES),
    st.integers(min_value=1, max_value=200).map(lambda depth: json.loads("[" * depth + "]" * depth)),
)


def _with_hostile_values(body):  # type: ignore[no-untyped-def]
    """A generated body as is, or with one field replaced (or added) by a hostile value."""
    if not isinstance(body, dict):
        return st.just(body)
    keys = st.sampled_from([*body, "extra"]) if body else st.just("extra")
    return st.one_of(st.just(body), st.builds(lambda key, value: {**body, key: value}, keys, HOSTILE_VALUES))


# Generating the schema touches no database, so it is loaded at collection time.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
schema.hook("flatmap_body")(lambda context, body: _with_hostile_values(body))

_MESSAGES = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"role": {"type": "string"}, "content": {"type": ["string", "array", "null"]}},
    },
}
_MODEL = {"type": "string", "enum": ["no-such-model", "sim/embed", "", "\u202e"]}
_SAMPLING = {
    "max_tokens": {"type": "integer"},
    "temperature": {"type": "number"},
    "stream": {"type": "boolean"},
    "n": {"type": "integer"},
    "stop": {"type": ["string", "array", "null"]},
    "user": {"type": "string"},
    "metadata": {"type": "object"},
}


def _post(properties: dict, required: list[str]) -> dict:
    body = {"type": "object", "properties": properties, "required": required}
    return {
        "post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"default": {"description": "an OpenAI-shaped answer or error"}},
        }
    }


GATEWAY_SCHEMA = {
    "openapi": "3.0.3",
    "info": {"title": "Spark Control gateway (request shapes)", "version": "1"},
    "paths": {
        "/v1/chat/completions": _post({"model": _MODEL, "messages": _MESSAGES, **_SAMPLING}, ["model", "messages"]),
        "/v1/completions": _post({"model": _MODEL, "prompt": {"type": ["string", "array"]}, **_SAMPLING}, ["model"]),
        "/v1/embeddings": _post(
            {"model": _MODEL, "input": {"type": ["string", "array"]}, "dimensions": {"type": "integer"}}, ["model"]
        ),
        "/v1/audio/speech": _post(
            {"model": _MODEL, "input": {"type": "string"}, "voice": {"type": "string"}, "speed": {"type": "number"}},
            ["model"],
        ),
        "/v1/models": {"get": {"responses": {"default": {"description": "the models"}}}},
        "/v1/models/{model}": {
            "get": {
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"default": {"description": "one model"}},
            }
        },
    },
}
gateway_schema = schemathesis.openapi.from_dict(GATEWAY_SCHEMA)
gateway_schema.app = get_wsgi_application()
gateway_schema.hook("flatmap_body")(lambda context, body: _with_hostile_values(body))


@pytest.fixture(autouse=True)
def keep_the_test_connection(db):  # type: ignore[no-untyped-def]
    """As Django's test client does: the test's connection (and its transaction) outlives each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _bearer(scope: str) -> dict[str, str]:
    _, plain = apitoken_create(name=f"fuzz-{scope}", scope=scope)
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def admin_headers(db, model_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    model_factory("tiny", repo="sim/tiny-model")  # something for the generated requests to find
    return _bearer("admin")


@pytest.fixture
def read_headers(db) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return _bearer("read")


def _no_such_route(case, response) -> bool:  # type: ignore[no-untyped-def]
    """A method the route lacks (405) or a path its converters refuse (404, no view ran): nothing to authorise."""
    if case.method.upper() != case.operation.method.upper():
        assert response.status_code == 405, response.text
        return True
    if response.status_code == 404 and response.json()["detail"].startswith("no route for"):
        return True
    return False


@schema.parametrize()
@FUZZ
def test_with_an_admin_token_no_server_error_and_responses_match_their_schema(case, admin_headers):
    response = case.call(headers=admin_headers)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
    assert response.status_code < 500, response.text


@schema.parametrize()
@FUZZ
def test_without_credentials_every_route_but_health_answers_401(case):
    # The schema declares Bearer and session security, so generated cases may carry made-up credentials: drop them.
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.cookies = {}
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    if _no_such_route(case, response):
        return
    if case.method.upper() == "GET" and case.path.endswith("/health"):
        assert response.status_code == 200
        return
    assert response.status_code in (401, 413), (case.method, case.formatted_path, response.status_code, response.text)
    if response.status_code == 401:
        assert response.json()["detail"].startswith("authentication required")


@schema.include(method=["POST", "PUT", "PATCH", "DELETE"]).parametrize()
@FUZZ
def test_a_read_token_never_writes(case, read_headers):
    response = case.call(headers=read_headers)
    case.validate_response(response, checks=[not_a_server_error])
    if _no_such_route(case, response):
        return
    assert response.status_code in (403, 413), (case.method, case.formatted_path, response.status_code, response.text)


@pytest.fixture
def inference_headers(db) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return _bearer("inference")


def _gateway_answered(response) -> None:  # type: ignore[no-untyped-def]
    """Never Django's 500 page: a success, or an OpenAI-shaped error (a 5xx only for an upstream it could not use)."""
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        assert "message" in response.json()["error"], response.text


@gateway_schema.parametrize()
@FUZZ
def test_the_gateway_with_an_inference_token_answers_every_generated_request(case, inference_headers):
    response = case.call(headers=inference_headers)
    _gateway_answered(response)


@gateway_schema.parametrize()
@FUZZ
def test_the_gateway_without_credentials_answers_401(case):
    response = case.call()
    if case.method.upper() != case.operation.method.upper():
        assert response.status_code == 405, response.text
        return
    assert response.status_code == 401, response.text


def _json_operations() -> list[tuple[str, str]]:
    found = []
    for document in (schema.raw_schema, GATEWAY_SCHEMA):
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                if "application/json" in operation.get("requestBody", {}).get("content", {}):
                    found.append((method, path.replace("{", "").replace("}", "")))
    return found


@pytest.mark.parametrize(("method", "path"), _json_operations())
def test_a_body_nested_a_thousand_deep_is_refused_with_a_4xx(method, path, admin_headers, inference_headers):
    """Small (2 KB) but deeper than the JSON parser's recursion: a 4xx naming the body, on every JSON route."""
    body = '{"model": "x", "messages": ' + "[" * DEEP + "]" * DEEP + "}"
    headers = inference_headers if path.startswith("/v1/") else admin_headers
    response = getattr(Client(raise_request_exception=False), method)(
        path, data=body, content_type="application/json", headers=headers
    )
    assert 400 <= response.status_code < 500, (method, path, response.status_code, response.content[:300])
