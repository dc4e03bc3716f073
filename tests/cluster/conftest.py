"""Fixtures for probe tests: a farm of real fake HTTP services, and Service rows pointing at them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cluster.models import Service
from cluster.services import cluster_settings_get
from sparksim.fake_services import FakeService, FakeServiceFarm

HEALTH_PATHS = {"vllm": "/v1/models", "embeddings": "/v1/models", "qdrant": "/readyz", "stt": "/health"}
HEALTH_PATHS |= {"tts": "/health", "http": "/"}


@pytest.fixture
def farm() -> Iterator[FakeServiceFarm]:
    with FakeServiceFarm() as running:
        yield running


@pytest.fixture
def only_test_services(db) -> None:  # type: ignore[no-untyped-def]
    """No built-in services: they point at real ports of this machine, which a sweep must not touch."""
    Service.objects.all().delete()


@pytest.fixture
def service_for(only_test_services) -> Callable[..., Service]:  # type: ignore[no-untyped-def]
    """A Service row for a fake service (kind taken from it), with the usual health path of that kind."""
    counter = iter(range(100_000))

    def make(fake: FakeService, key: str | None = None, **fields: Any) -> Service:
        fields.setdefault("name", f"{fake.kind} {fake.mode}")
        fields.setdefault("health_path", HEALTH_PATHS[fake.kind])
        if fake.kind in ("vllm", "embeddings", "stt", "tts") and fake.model:
            fields.setdefault("models_served", [fake.model])
        service = Service(key=key or f"{fake.kind}-{next(counter)}", kind=fake.kind, url=fake.url, **fields)
        service.full_clean()
        service.save()
        return service

    return make


@pytest.fixture
def cluster_settings(db):  # type: ignore[no-untyped-def]
    return cluster_settings_get()
