"""Schemathesis against the project's own OpenAPI schema (`/api/openapi.json`), through the whole WSGI stack
(middleware, CSRF, auth): with an admin token no 5xx and no response that violates its documented schema; without
credentials, and with credentials that lack the scope, nothing but a refusal (no route accepts an
unauthenticated write, nor a read-scope one)."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from sparkcontrol.tokens import apitoken_create

EXAMPLES = 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# Generating the schema touches no database, so it is loaded at collection time.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())


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
