"""The database invariants under real concurrency, with the test database on Postgres (the second pass of
scripts/test runs these with DATABASE_URL=postgres://...): threads with connections of their own race for the
single swap slot, the lock, a stale swap (two reapers) and queued tasks (several db_worker loops)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from coordination.models import SwapLock
from coordination.services import LockHeld, lock_acquire
from coordination.tasks import webhook_deliver
from swaps.models import Swap, SwapState
from swaps.services import SwapRefused, swap_request, swaps_reap_stale

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def on_postgres() -> None:
    assert connection.vendor == "postgresql", (
        "these tests need the test database on Postgres: DATABASE_URL=postgres://postgres@127.0.0.1:5432/test "
        "pytest -m postgres (scripts/test runs them so)"
    )


def race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released together; each returns its result or the exception it raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except Exception as exc:  # noqa: BLE001 - the test sorts outcomes
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_simultaneous_swap_requests_take_the_slot_once(model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    results = race(12, lambda i: swap_request(model_key="tiny", dry_run=False, actor=f"racer-{i}"))
    accepted = [r for r in results if isinstance(r, Swap)]
    refused = [r for r in results if isinstance(r, SwapRefused)]
    assert len(accepted) == 1, results
    assert len(refused) == 11 and {r.status for r in refused} == {409}
    assert {r.extra["active_swap"] for r in refused} <= {str(accepted[0].id), None}
    assert Swap.objects.filter(active=True).count() == 1
    # One runner task was enqueued, for the accepted swap only.
    tasks = DBTaskResult.objects.filter(task_path="swaps.tasks.swap_execute")
    assert [t.args_kwargs["args"] for t in tasks] == [[str(accepted[0].id)]]


def test_the_compiled_lock_read_matches_the_orm_on_postgres():
    """The lock read's SQL compiled once (coordination.selectors) gives the ORM's row on Postgres too."""
    from coordination.selectors import _lock_read

    fields = [f.attname for f in SwapLock._meta.concrete_fields]
    assert _lock_read.read() is None
    lock_acquire(holder="compiled-read", ttl_seconds=60, actor="test")
    read, orm = _lock_read.read(), SwapLock.objects.get()
    assert {f: getattr(read, f) for f in fields} == {f: getattr(orm, f) for f in fields}
    with transaction.atomic():
        locked = _lock_read.read(for_update=True)
        assert {f: getattr(locked, f) for f in fields} == {f: getattr(orm, f) for f in fields}
    compiled_for_update = [sql for (_, _, for_update), (sql, *_) in _lock_read._compiled.items() if for_update]
    assert compiled_for_update and "FOR UPDATE" in compiled_for_update[0]


def test_simultaneous_lock_acquires_grant_once():
    def acquire(index: int) -> bool:
        _, created = lock_acquire(holder=f"cron-{index}", ttl_seconds=60, actor=f"token:cron-{index}")
        return created

    results = race(16, acquire)
    assert results.count(True) == 1, results
    assert sum(isinstance(r, LockHeld) for r in results) == 15, results
    assert SwapLock.objects.get().epoch == 1


def test_reapers_in_several_processes_interrupt_a_stale_swap_once(model_factory, settings):
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "HEARTBEAT_STALE_SECONDS": 5}
    model_factory("tiny", repo="sim/tiny-model")
    swap = swap_request(model_key="tiny", dry_run=False, actor="test")
    stale = timezone.now() - timedelta(seconds=60)
    Swap.objects.filter(pk=swap.pk).update(state=SwapState.LOADING, heartbeat_at=stale, started_at=stale)

    results = race(6, lambda i: [str(s.id) for s in swaps_reap_stale()])
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 0, 1], results
    swap.refresh_from_db()
    assert swap.state == SwapState.INTERRUPTED and swap.active is None
    assert swap.events.filter(kind="state", state=SwapState.INTERRUPTED).count() == 1


def test_worker_loops_claim_each_task_once():
    # Deliveries that do not exist: each run is quick and returns "skipped", and is recorded against its worker.
    enqueued = [webhook_deliver.enqueue(1_000_000 + i, 1) for i in range(40)]

    def work(index: int) -> int:
        worker = Worker(
            queue_names=["*"],
            interval=0,
            batch=True,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=f"w{index}",
            excluded_queue_names=[],
        )
        worker.run()
        return worker._run_tasks

    results = race(4, work)
    assert all(isinstance(r, int) for r in results), results
    rows = DBTaskResult.objects.filter(id__in=[r.id for r in enqueued])
    assert rows.count() == 40
    assert {row.status for row in rows} == {"SUCCESSFUL"}
    assert all(len(row.worker_ids) == 1 for row in rows)
    assert {row.return_value for row in rows} == {"skipped"}
