"""Hostile input on the gateway and the API answers 4xx with a message that names the problem, never a 500:
JSON nested deeper than anyone needs, date-times at the edge of the calendar, huge integers, odd unicode."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from accounts.tokens import apitoken_create

pytestmark = pytest.mark.django_db

DEEP = 1000


def _bearer(scope: str) -> dict[str, str]:
    _, plain = apitoken_create(name=f"limits-{scope}", scope=scope)
    return {"Authorization": f"Bearer {plain}"}


def _nested(depth: int) -> str:
    return '{"model": "tiny", "messages": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"])
def test_deeply_nested_json_on_the_gateway_is_a_400_naming_the_nesting(path):
    body = _nested(DEEP)
    assert len(body) < 2100
    response = Client().post(path, data=body, content_type="application/json", headers=_bearer("inference"))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "nested" in error["message"] and error["code"] == "invalid_json"


def test_deeply_nested_json_on_the_api_is_a_4xx_naming_the_nesting():
    body = json.dumps({"id": "x", "name": "n", "owner": "o", "schedule": "@daily"})[:-1] + ', "x": '
    body += "[" * DEEP + "]" * DEEP + "}"
    response = Client().post("/api/schedule", data=body, content_type="application/json", headers=_bearer("operate"))
    assert 400 <= response.status_code < 500, response.content


@pytest.mark.parametrize(
    "next_run",
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59",
        "0001-01-01T00:00:00Z",
    ],
)
def test_a_next_run_at_the_edge_of_the_calendar_is_a_422_naming_the_field(next_run):
    body = {"id": "edge", "name": "edge", "owner": "cron", "schedule": "@daily", "next_run": next_run}
    response = Client().post(
        "/api/schedule", data=json.dumps(body), content_type="application/json", headers=_bearer("operate")
    )
    if response.status_code in (200, 201):  # representable in UTC: stored and shown as given
        assert response.json()["next_run"] is not None
        listed = Client().get("/api/schedule", headers=_bearer("read"))
        assert listed.status_code == 200
        return
    assert response.status_code == 422, response.content
    assert "next_run" in response.json()["detail"]


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), 1e308, "\ud800", "\u202e\u0000\ufeff", "9" * 5000],
)
def test_huge_numbers_and_odd_unicode_on_the_gateway_are_never_a_500(value):
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": value}], "max_tokens": value})
    response = Client().post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=_bearer("inference")
    )
    assert response.status_code < 500 or response.json()["error"]["code"] != "internal_error", response.content
