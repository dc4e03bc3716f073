"""Scheduled swaps on the simulated cluster (real sshd, launcher, docker and vLLM) with real task workers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from actions import services
from actions.models import ActionRun, RunOutcome
from actions.services import action_create, action_run_execute, action_run_now, actions_schedule_start
from audit.models import AuditEntry
from coordination.models import SwapLock
from coordination.services import lock_acquire, lock_release, webhook_endpoint_create
from sparkcontrol.worker import start_embedded_worker
from swaps.models import ServingState, SwapState
from tests.coordination.receiver import Receiver, serve_receiver

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def workers() -> Iterator[None]:
    """The serving process's task workers, a thread per queue, polling often."""
    started = start_embedded_worker(interval=0.2)
    yield
    for worker in started:
        worker.stop()
    time.sleep(0.5)
    close_old_connections()


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:  # type: ignore[no-untyped-def]
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "WEBHOOK_ALLOW_PRIVATE": True}
    with serve_receiver() as state:
        yield state


def _finished(run_id: int, timeout: float = 90.0) -> ActionRun:
    deadline = time.monotonic() + timeout
    while True:
        run = ActionRun.objects.select_related("swap").get(pk=run_id)
        if run.outcome != RunOutcome.RUNNING:
            return run
        assert time.monotonic() < deadline, f"run still running: {run.detail}"
        time.sleep(0.2)


def _swap_action(name: str, **extra) -> object:  # type: ignore[no-untyped-def]
    data = {"name": name, "cron": "0 3 * * *", "action": "swap", "model": "tiny", **extra}
    return action_create(data=data, actor="test")


def _lock_free() -> bool:
    lock = SwapLock.objects.filter(pk=SwapLock.SINGLETON_ID).first()
    return lock is None or not lock.is_held(timezone.now())


def test_a_schedule_due_in_two_seconds_swaps_the_cluster(topology, model_factory, workers, receiver, settings):
    settings.ACTIONS_TICK_SECONDS = 1
    model_factory("tiny", repo="sim/tiny-model")
    webhook_endpoint_create(url=receiver.url, actor="test")
    actions_schedule_start()
    due = timezone.now().replace(microsecond=0) + timedelta(seconds=2)
    action = action_create(
        data={
            "name": "nightly-tiny",
            "cron": f"{due.minute} {due.hour} * * * {due.second}",
            "timezone": "UTC",
            "action": "swap",
            "model": "tiny",
        },
        actor="test",
    )
    assert action.next_run == due
    deadline = time.monotonic() + 30
    while not ActionRun.objects.filter(action=action).exists():
        assert time.monotonic() < deadline, "the occurrence was never claimed"
        time.sleep(0.1)
    run = _finished(ActionRun.objects.get(action=action).id)
    assert run.outcome == RunOutcome.OK, run.detail
    assert run.scheduled_for == due and run.started_at >= due
    assert run.swap.state == SwapState.READY and run.swap.requested_by == "scheduler:nightly-tiny"
    assert run.swap.lock_epoch and run.swap.lock_epoch >= 1  # it ran under the scheduler's own grant
    assert ServingState.objects.get().model_key == "tiny"
    assert _lock_free()
    actors = set(
        AuditEntry.objects.filter(target__in=["nightly-tiny", "swap-lock", "tiny"]).values_list("actor", flat=True)
    )
    assert actors >= {"scheduler:nightly-tiny"}
    assert AuditEntry.objects.filter(actor="scheduler:nightly-tiny", action="lock.acquire").exists()
    assert AuditEntry.objects.filter(actor="scheduler:nightly-tiny", action="action.ok").exists()
    receiver.wait_for(1, timeout=30)
    body = json.loads(receiver.requests[0].body)
    assert body["event"] == "swap_complete" and body["swap"]["requested_by"] == "scheduler:nightly-tiny"
    assert ActionRun.objects.filter(action=action).count() == 1


def test_a_held_lock_skips_the_run_naming_the_holder(topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    action = _swap_action("skipper")
    grant, _ = lock_acquire(holder="ops-maintenance", ttl_seconds=600, actor="ops")
    run = action_run_execute(run_id=action_run_now(action=action, actor="test").id)
    assert run.outcome == RunOutcome.SKIPPED and "'ops-maintenance'" in run.detail, run.detail
    assert run.swap is None
    assert SwapLock.objects.get().holder == "ops-maintenance"
    lock_release(token=grant.token, force=False, actor="ops")


def test_waiting_for_the_lock_proceeds_when_it_is_released(topology, model_factory, workers, monkeypatch):
    monkeypatch.setattr(services, "SECONDS_PER_WAIT_MINUTE", 20)
    monkeypatch.setattr(services, "LOCK_POLL_SECONDS", 0.2)
    model_factory("tiny", repo="sim/tiny-model")
    action = _swap_action("patient", when_locked="wait", wait_minutes=1)
    grant, _ = lock_acquire(holder="ops-maintenance", ttl_seconds=600, actor="ops")
    run = action_run_now(action=action, actor="test")  # queued for the "actions" worker after commit

    deadline = time.monotonic() + 20
    while "waiting up to 1 min" not in ActionRun.objects.get(pk=run.pk).detail:
        assert time.monotonic() < deadline, ActionRun.objects.get(pk=run.pk).detail
        time.sleep(0.1)
    lock_release(token=grant.token, force=False, actor="ops")
    run = _finished(run.id)
    assert run.outcome == RunOutcome.OK, run.detail
    assert run.swap.state == SwapState.READY and run.swap.requested_by == "scheduler:patient"
    assert _lock_free()


def test_waiting_for_the_lock_gives_up_after_the_wait(topology, model_factory, monkeypatch):
    monkeypatch.setattr(services, "SECONDS_PER_WAIT_MINUTE", 1)
    monkeypatch.setattr(services, "LOCK_POLL_SECONDS", 0.2)
    model_factory("tiny", repo="sim/tiny-model")
    action = _swap_action("give-up", when_locked="wait", wait_minutes=2)
    grant, _ = lock_acquire(holder="ops-maintenance", ttl_seconds=600, actor="ops")
    started = time.monotonic()
    run = action_run_execute(run_id=action_run_now(action=action, actor="test").id)
    assert time.monotonic() - started >= 2
    assert run.outcome == RunOutcome.SKIPPED and "'ops-maintenance'" in run.detail and "waited 2 min" in run.detail
    assert SwapLock.objects.get().holder == "ops-maintenance"
    lock_release(token=grant.token, force=False, actor="ops")


def test_a_restart_the_cluster_refuses_fails_with_its_reason(db):
    from cluster.models import Service

    Service.objects.get_or_create(key="parakeet", defaults={"name": "Parakeet", "kind": "http", "port": 8000})
    action = action_create(
        data={"name": "restart-asr", "cron": "0 4 * * *", "action": "restart", "service": "parakeet"}, actor="t"
    )
    run = action_run_execute(run_id=action_run_now(action=action, actor="test").id)
    assert run.outcome == RunOutcome.FAILED and run.detail.startswith("restart refused:")
    assert "container" in run.detail, run.detail


def test_a_sweep_action_runs_the_sweep_and_keeps_its_counts(topology):
    action = action_create(
        data={"name": "status-sweep", "cron": "*/5 * * * *", "action": "sweep", "sweep": "status"}, actor="t"
    )
    run = action_run_execute(run_id=action_run_now(action=action, actor="test").id)
    assert run.outcome == RunOutcome.OK and run.detail.startswith("status sweep:"), run.detail
    assert sum(run.result.values()) >= 1


def test_a_run_is_executed_once(topology):
    action = action_create(
        data={"name": "once", "cron": "*/5 * * * *", "action": "sweep", "sweep": "status"}, actor="t"
    )
    run = action_run_now(action=action, actor="test")
    results = []
    threads = [
        threading.Thread(target=lambda: (results.append(action_run_execute(run_id=run.id)), close_old_connections()))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(result is None for result in results) == [False, True]
