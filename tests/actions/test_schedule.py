"""Claiming due occurrences: once each, the missed-run policy after downtime (never a burst), interrupted runs."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult

from actions import services
from actions.models import ActionRun, RunOutcome, ScheduledAction, TickLease
from actions.services import (
    INTERRUPTED,
    action_create,
    actions_due_claim,
    actions_reap_gone_workers,
    actions_reap_stale,
    actions_schedule_start,
    actions_tick,
    occurrence_claim,
)

pytestmark = pytest.mark.django_db(transaction=True)  # on-commit enqueues happen


class Clock:
    """The scheduler's clock, moved by hand; in the future, so tasks it queues for later wait in the queue."""

    def __init__(self) -> None:
        self.at = datetime(2030, 6, 17, 11, 59, 58, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(services, "_now", fake.now)
    return fake


def _sweep(name: str = "hourly-sweep", cron: str = "0 * * * *", **extra) -> ScheduledAction:  # type: ignore[no-untyped-def]
    data = {"name": name, "cron": cron, "timezone": "UTC", "action": "sweep", "sweep": "status", **extra}
    return action_create(data=data, actor="test")


def _queued_runs() -> list[int]:
    return [row.args_kwargs["args"][0] for row in DBTaskResult.objects.filter(queue_name="actions")]


def test_an_occurrence_is_claimed_once_and_the_next_one_scheduled(clock):
    action = _sweep()
    assert action.next_run == datetime(2030, 6, 17, 12, 0, tzinfo=UTC)
    assert actions_due_claim(now=clock.now()) == []  # not due yet
    clock.advance(3)
    stale_copy = ScheduledAction.objects.get(pk=action.pk)
    (run,) = actions_due_claim(now=clock.now())
    assert run.scheduled_for == datetime(2030, 6, 17, 12, 0, tzinfo=UTC) and run.outcome == RunOutcome.RUNNING
    assert run.detail == ""
    # A second worker that read the action before the claim matches no row.
    assert occurrence_claim(action=stale_copy, now=clock.now()) is None
    assert actions_due_claim(now=clock.now()) == []
    action.refresh_from_db()
    assert action.next_run == datetime(2030, 6, 17, 13, 0, tzinfo=UTC)
    assert _queued_runs() == [run.id]


def test_the_unique_occurrence_backs_the_claim(clock):
    action = _sweep()
    clock.advance(3)
    ActionRun.objects.create(action=action, scheduled_for=action.next_run)  # another worker's row, inserted first
    assert occurrence_claim(action=action, now=clock.now()) is None
    assert ActionRun.objects.count() == 1


def _run_ready_tasks(queues: list[str]) -> None:
    """A db_worker loop on these queues until nothing is ready: what a restarted serving process's worker does."""
    Worker(
        queue_names=queues,
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="restarted",
        excluded_queue_names=[],
    ).run()


@pytest.mark.parametrize("policy", ["run_latest", "skip"])
def test_a_restart_across_due_times_follows_the_missed_run_policy(clock, policy):
    """Spark Control stops before 12:00 and starts again at 15:20: four hourly occurrences passed."""
    action = _sweep(missed=policy)
    clock.advance(3 * 3600 + 20 * 60)
    actions_schedule_start()  # what a serving process does as it starts
    _run_ready_tasks(["default"])  # its worker takes the tick (runs themselves are on the "actions" queue)
    (run,) = ActionRun.objects.all()  # never a burst: one record for the missed occurrences
    assert run.scheduled_for == datetime(2030, 6, 17, 15, 0, tzinfo=UTC)
    assert "missed 4 occurrences since 2030-06-17T12:00:00+00:00" in run.detail
    if policy == "run_latest":
        assert run.outcome == RunOutcome.RUNNING and "running the latest once" in run.detail
        assert _queued_runs() == [run.id]
        done = services.action_run_execute(run_id=run.id)
        assert done.outcome == RunOutcome.OK and done.detail.startswith("status sweep:")
        assert "missed 4 occurrences" in done.detail  # why it ran late stays beside what it did
    else:
        assert run.outcome == RunOutcome.SKIPPED and "skipped by policy" in run.detail and run.finished_at
        assert _queued_runs() == []
    action.refresh_from_db()
    assert action.next_run == datetime(2030, 6, 17, 16, 0, tzinfo=UTC)
    actions_tick(chain=True)
    assert ActionRun.objects.count() == 1


def test_a_swap_run_of_a_process_that_stopped_is_recorded_at_start_up_and_its_lock_freed(clock):
    """The process that ran the run is gone (its pid is the data directory's previous one)."""
    from coordination.models import SwapLock
    from coordination.services import lock_acquire
    from sparkcontrol.startup import _reap_gone_workers

    pid = 4_000_000 + os.getpid() % 1000  # above pid_max: no such process
    action = action_create(data={"name": "nightly", "cron": "0 3 * * *", "action": "warm"}, actor="test")
    ScheduledAction.objects.filter(pk=action.pk).update(action="swap", model="x")
    lock_acquire(holder="scheduler:nightly", ttl_seconds=600, actor="scheduler:nightly")
    now = services._now()
    run = ActionRun.objects.create(
        action=action, scheduled_for=now, started_at=now, heartbeat_at=now, worker=f"{socket.gethostname()}:{pid}"
    )
    _reap_gone_workers(previous_pid=pid)
    run.refresh_from_db()
    assert run.outcome == RunOutcome.FAILED and run.detail.startswith("interrupted: the process running it stopped")
    assert not SwapLock.objects.get().is_held(timezone.now())


def test_a_late_single_occurrence_counts_as_missed_past_the_grace(clock, settings):
    settings.ACTIONS_MISSED_AFTER_SECONDS = 60
    _sweep(missed="skip")
    clock.advance(2 + 30)  # 30 s late: on time
    (on_time,) = actions_due_claim(now=clock.now())
    assert on_time.outcome == RunOutcome.RUNNING
    clock.advance(3600 + 120)  # the 13:00 occurrence, 2 minutes late: missed
    (late,) = actions_due_claim(now=clock.now())
    assert late.outcome == RunOutcome.SKIPPED and "missed 1 occurrence since" in late.detail


def test_a_paused_action_never_runs_and_resuming_does_not_catch_up(clock):
    action = _sweep()
    services.action_set_enabled(action=action, enabled=False, actor="test")
    clock.advance(5 * 3600)
    assert actions_due_claim(now=clock.now()) == []
    action = services.action_set_enabled(action=action, enabled=True, actor="test")
    assert action.next_run == datetime(2030, 6, 17, 17, 0, tzinfo=UTC)
    assert actions_due_claim(now=clock.now()) == []


def test_time_zones_and_seconds(clock):
    berlin = action_create(
        data={"name": "berlin", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "action": "warm"}, actor="t"
    )
    assert berlin.next_run == datetime(2030, 6, 18, 0, 0, tzinfo=UTC)  # 02:00 CEST
    soon = action_create(data={"name": "soon", "cron": "0 12 * * * 0", "action": "warm"}, actor="t")
    assert soon.next_run == datetime(2030, 6, 17, 12, 0, 0, tzinfo=UTC)


def test_the_chain_tick_keeps_one_successor(clock, settings):
    settings.ACTIONS_TICK_SECONDS = 30
    _sweep(cron="* * * * * 10")  # due at 11:59:10 ... next at 12:00:10
    actions_tick(chain=True)
    lease = TickLease.objects.get()
    assert lease.next_due == datetime(2030, 6, 17, 12, 0, 10, tzinfo=UTC)  # the soonest action, before the period
    ticks = DBTaskResult.objects.filter(task_path="actions.tasks.actions_tick")
    chain = [t for t in ticks if t.args_kwargs["args"] == [True]]
    assert len(chain) == 1
    # A second chain tick (another process's start) loses the period and queues nothing more.
    actions_tick(chain=True)
    assert len([t for t in ticks.all() if t.args_kwargs["args"] == [True]]) == 1


def test_runs_of_a_gone_process_and_stale_runs_are_recorded_as_interrupted(clock, settings):
    action = _sweep()
    gone_worker = f"{socket.gethostname()}:999999"
    now = services._now()
    dead = ActionRun.objects.create(
        action=action, scheduled_for=now, started_at=now, heartbeat_at=now, worker=gone_worker
    )
    live = ActionRun.objects.create(
        action=action,
        scheduled_for=now + timedelta(seconds=1),
        started_at=now,
        heartbeat_at=now,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    from sparkcontrol.startup import _pid_alive

    def gone(worker: str) -> bool:
        return not _pid_alive(int(worker.rpartition(":")[2]))

    assert [run.id for run in actions_reap_gone_workers(gone=gone)] == [dead.id]
    dead.refresh_from_db()
    assert dead.outcome == RunOutcome.FAILED and dead.detail.startswith(INTERRUPTED) and dead.finished_at
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "HEARTBEAT_STALE_SECONDS": 30}
    assert actions_reap_stale(now=now + timedelta(seconds=10)) == []
    assert [run.id for run in actions_reap_stale(now=now + timedelta(seconds=60))] == [live.id]
    live.refresh_from_db()
    assert live.outcome == RunOutcome.FAILED and live.detail.startswith(INTERRUPTED)


def test_old_runs_are_pruned_per_action(clock):
    action = _sweep()
    start = services._now()
    ActionRun.objects.bulk_create(
        [ActionRun(action=action, scheduled_for=start + timedelta(hours=i), outcome=RunOutcome.OK) for i in range(8)]
    )
    assert services.actions_runs_prune(keep=5) == 3
    kept = list(ActionRun.objects.order_by("scheduled_for").values_list("scheduled_for", flat=True))
    assert kept == [start + timedelta(hours=i) for i in range(3, 8)]
