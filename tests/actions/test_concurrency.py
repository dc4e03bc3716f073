"""Due occurrences under real concurrency on Postgres (the second pass of scripts/test): worker loops with
connections of their own, each taking ticks, claim an occurrence once and run it once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from actions.models import ActionRun, RunOutcome, ScheduledAction
from actions.services import action_create, actions_tick
from actions.tasks import actions_tick as tick_task
from audit.models import AuditEntry

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
        thread.join(timeout=120)
    return results


def _due_sweep(settings) -> ScheduledAction:  # type: ignore[no-untyped-def]
    """A sweep whose 03:00 occurrence has passed (and counts as on time)."""
    settings.ACTIONS_MISSED_AFTER_SECONDS = 3 * 86400
    action = action_create(
        data={"name": "nightly-sweep", "cron": "0 3 * * *", "action": "sweep", "sweep": "status"}, actor="test"
    )
    due = action.occurrence_at_or_before(timezone.now())
    ScheduledAction.objects.filter(pk=action.pk).update(next_run=due)
    action.refresh_from_db()
    return action


def test_simultaneous_ticks_claim_an_occurrence_once(settings):
    action = _due_sweep(settings)
    results = race(12, lambda i: actions_tick(chain=i % 2 == 0))
    assert not [r for r in results if isinstance(r, Exception)], results
    (run,) = ActionRun.objects.filter(action=action)
    assert run.scheduled_for == action.next_run and run.outcome == RunOutcome.RUNNING
    runs_queued = DBTaskResult.objects.filter(task_path="actions.tasks.action_run_execute")
    assert [task.args_kwargs["args"] for task in runs_queued] == [[run.id]]
    action.refresh_from_db()
    assert action.next_run > timezone.now()


def test_two_worker_loops_run_an_occurrence_once(settings):
    action = _due_sweep(settings)
    for _ in range(8):
        tick_task.enqueue(False)

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

    results = race(2, work)
    assert all(isinstance(r, int) for r in results), results
    (run,) = ActionRun.objects.filter(action=action)
    assert run.outcome == RunOutcome.OK and run.detail.startswith("status sweep:"), run.detail
    assert AuditEntry.objects.filter(action="action.start", target="nightly-sweep").count() == 1
    executed = DBTaskResult.objects.filter(task_path="actions.tasks.action_run_execute")
    assert [task.status for task in executed] == ["SUCCESSFUL"]
    ticks = DBTaskResult.objects.filter(task_path="actions.tasks.actions_tick", status="SUCCESSFUL")
    assert ticks.count() == 8 and sorted({len(t.worker_ids) for t in ticks}) == [1]
