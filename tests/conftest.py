"""Shared fixtures: API clients with tokens of each scope, a staff session, catalog factories."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from accounts.tokens import apitoken_create
from catalog.models import ModelEntry

pytest_plugins = ["testkit.pytest_plugin"]  # a failing test shows the logs of the services it ran


class ApiClient:
    """A thin JSON client over Django's test client, with an optional bearer token."""

    def __init__(self, token: str | None = None, client: Client | None = None) -> None:
        self.client = client or Client()
        self.token = token

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        merged = dict(headers or {})
        if self.token:
            merged.setdefault("Authorization", f"Bearer {self.token}")
        return merged

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ):  # type: ignore[no-untyped-def]
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs: dict[str, Any] = {"headers": self._headers(headers)}
        if data is not None:
            kwargs["data"] = data
            kwargs["content_type"] = "application/json"
        return getattr(self.client, method.lower())(path, **kwargs)

    def get(self, path: str, **kw):  # type: ignore[no-untyped-def]
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw):  # type: ignore[no-untyped-def]
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw):  # type: ignore[no-untyped-def]
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, **kw):  # type: ignore[no-untyped-def]
        return self.request("DELETE", path, **kw)


@pytest.fixture
def make_client(db) -> Callable[[str | None], ApiClient]:  # type: ignore[no-untyped-def]
    counter = iter(range(10_000))

    def make(scope: str | None) -> ApiClient:
        if scope is None:
            return ApiClient()
        _, plain = apitoken_create(name=f"test-{scope}-{next(counter)}", scope=scope)
        return ApiClient(plain)

    return make


@pytest.fixture
def anon(make_client) -> ApiClient:  # type: ignore[no-untyped-def]
    return make_client(None)


@pytest.fixture
def reader(make_client) -> ApiClient:  # type: ignore[no-untyped-def]
    return make_client("read")


@pytest.fixture
def operator(make_client) -> ApiClient:  # type: ignore[no-untyped-def]
    return make_client("operate")


@pytest.fixture
def admin_api(make_client) -> ApiClient:  # type: ignore[no-untyped-def]
    return make_client("admin")


@pytest.fixture
def staff_client(db, django_user_model) -> Client:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.create_superuser(username="staff", password="pw-staff-123", email="")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def model_factory(db) -> Callable[..., ModelEntry]:  # type: ignore[no-untyped-def]
    def make(key: str = "tiny", **fields: Any) -> ModelEntry:
        fields.setdefault("name", key)
        if "local_path" not in fields:
            fields.setdefault("repo", "sim/tiny-model")
        entry = ModelEntry(key=key, **fields)
        entry.full_clean()
        entry.save()
        return entry

    return make


@pytest.fixture(autouse=True)
def _gateway_refresher_stopped():
    """A test that used the gateway in this process leaves no refresher thread behind: it would go on reading and
    writing (its ledger row) the database through later tests."""
    yield
    runtime = sys.modules.get("gateway.runtime")
    if runtime is not None:
        runtime.gateway_runtime().stop()
