"""The OpenAPI schema says how to authenticate (Bearer, or the session), timestamps have one format (ISO 8601 with
an offset) in lock and swap payloads alike, and refusals carry only the keys that apply to them."""

from __future__ import annotations

import re

import pytest

from catalog.models import ModelEntry
from coordination.services import lock_acquire

OFFSET_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")


@pytest.fixture
def schema(anon):  # type: ignore[no-untyped-def]
    response = anon.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_declares_bearer_and_session_security(schema) -> None:  # type: ignore[no-untyped-def]
    schemes = schema["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"]
    assert bearer, schemes
    lock_post = schema["paths"]["/api/swap/lock"]["post"]
    assert {bearer[0]: []} in lock_post["security"]
    assert "security" not in schema["paths"]["/api/health"]["get"]


def test_the_423_is_declared_with_the_lock_holder(schema) -> None:  # type: ignore[no-untyped-def]
    refused = schema["paths"]["/api/swap"]["post"]["responses"]["423"]
    assert refused["description"] == "Locked"
    ref = refused["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][ref]["required"]) == {"detail", "holder", "expires_at"}


def test_lock_and_swap_timestamps_share_one_format(operator, db) -> None:  # type: ignore[no-untyped-def]
    grant = operator.post("/api/swap/lock", {"holder": "cron", "ttl_seconds": 60})
    assert grant.status_code == 201
    status = operator.get("/api/swap/lock").json()
    held = operator.post("/api/swap/lock", {"holder": "other"})
    assert held.status_code == 423
    ModelEntry.objects.create(key="tiny", name="tiny", repo="sim/tiny")
    dry = operator.post("/api/swap", {"model": "tiny", "dry_run": True})
    assert dry.status_code == 202
    stamps = [
        grant.json()["acquired_at"],
        grant.json()["expires_at"],
        status["acquired_at"],
        status["expires_at"],
        held.json()["expires_at"],
        dry.json()["created_at"],
    ]
    locked = operator.post("/api/swap", {"model": "tiny"})
    assert locked.status_code == 423
    stamps.append(locked.json()["expires_at"])
    for stamp in stamps:
        assert OFFSET_TIMESTAMP.match(stamp), stamps


def test_refusals_carry_only_the_keys_that_apply(operator, db) -> None:  # type: ignore[no-untyped-def]
    unknown = operator.post("/api/swap", {"model": "nope"})
    assert unknown.status_code == 404 and set(unknown.json()) == {"detail"}
    ModelEntry.objects.create(key="tiny", name="tiny", repo="sim/tiny")
    lock_acquire(holder="cron", ttl_seconds=60, actor="t")
    locked = operator.post("/api/swap", {"model": "tiny"})
    assert locked.status_code == 423 and set(locked.json()) == {"detail", "holder", "expires_at"}
