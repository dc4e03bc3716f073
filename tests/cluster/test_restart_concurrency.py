"""Restart requests under real concurrency on Postgres (the second pass of scripts/test runs these with
DATABASE_URL=postgres://...): one active restart per service, and none granted past a lock taken meanwhile."""

from __future__ import annotations

import pytest
from django.db import connection

from cluster.models import Role, Service, ServiceRestart, SparkHost
from cluster.restarts import RestartRefused, service_restart_request
from coordination.models import SwapLock
from coordination.services import LockHeld, lock_acquire
from tests.scaleout.test_db_concurrency import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def on_postgres() -> None:
    assert connection.vendor == "postgresql", "DATABASE_URL=postgres://... pytest -m postgres (scripts/test does)"


@pytest.fixture
def services(db) -> None:  # type: ignore[no-untyped-def]
    SparkHost.objects.create(name="spark-w", address="127.0.0.1", role=Role.WORKER)
    for key, gpu in (("asr", False), ("asr-gpu", True)):
        Service.objects.create(key=key, name=key, kind="stt", node="worker", port=8000, container=key, gpu=gpu)


def test_simultaneous_restarts_of_one_service_make_one_row(services):
    results = race(12, lambda i: service_restart_request(key="asr", requested_by=f"racer-{i}"))
    accepted = [r for r in results if isinstance(r, ServiceRestart)]
    refused = [r for r in results if isinstance(r, RestartRefused)]
    assert len(accepted) == 1 and len(refused) == 11, results
    assert {r.status for r in refused} == {409}
    assert ServiceRestart.objects.count() == 1


def test_a_lock_taken_during_a_burst_of_gpu_restarts_is_never_overtaken(services):
    """Threads request restarts of the GPU service while one takes the lock: a restart row exists only if its
    request committed before the lock's grant (they are serialised on the lock row)."""

    def work(index: int):  # type: ignore[no-untyped-def]
        if index == 0:
            return lock_acquire(holder="eval", ttl_seconds=600, actor="test")
        return service_restart_request(key="asr-gpu", requested_by=f"racer-{index}")

    # The lock row as it stands after its first grant (a free row, as lock_gate also expects to lock).
    SwapLock.objects.create()
    results = race(8, work)
    assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, RestartRefused | LockHeld)]
    refused = [r for r in results if isinstance(r, RestartRefused)]
    assert {r.status for r in refused} <= {409, 423}
    rows = list(ServiceRestart.objects.all())
    assert len(rows) <= 1
    grant, _ = results[0]
    if rows:
        assert rows[0].requested_at <= grant.acquired_at
    # With the lock held, every further request is refused with 423.
    with pytest.raises(RestartRefused) as info:
        service_restart_request(key="asr-gpu", requested_by="late")
    assert info.value.status == 423
