"""A task enqueued by this process is claimed by its id (one conditional UPDATE), and still runs once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from sparkcontrol.worker import WakeableWorker
from telemetry.tasks import load_sample_tick

pytestmark = pytest.mark.django_db(transaction=True)


def _woken_worker(result) -> WakeableWorker:  # type: ignore[no-untyped-def]
    worker = WakeableWorker(interval=1.0)
    worker._on_enqueued(task_result=result)
    assert worker.wake.is_set() and list(worker.woken) == [(str(result.id), None)]
    return worker


def test_the_named_task_is_claimed_once_whoever_tries_first():
    result = load_sample_tick.enqueue()
    first, second = _woken_worker(result), _woken_worker(result)

    claimed = first._claim_woken()
    assert claimed is not None and str(claimed.pk) == str(result.id)
    row = DBTaskResult.objects.get(pk=result.id)
    assert row.status == TaskResultStatus.RUNNING and row.worker_ids == [first.worker_id]
    assert row.started_at is not None

    # Another process's worker named the same task, and a poll looks for ready work: neither takes it again.
    assert second._claim_woken() is None
    assert second._claim_next() is None
    assert DBTaskResult.objects.get(pk=result.id).worker_ids == [first.worker_id]


def test_a_delayed_task_waits_for_its_time_even_when_named():
    later = load_sample_tick.using(run_after=timezone.now() + timedelta(hours=1)).enqueue()
    worker = _woken_worker(later)
    assert worker._claim_woken() is None
    assert DBTaskResult.objects.get(pk=later.id).status == TaskResultStatus.READY


def test_a_named_task_already_taken_by_the_poll_falls_through_to_the_next_ready_one():
    taken, waiting = load_sample_tick.enqueue(), load_sample_tick.enqueue()
    poller = WakeableWorker(interval=1.0)
    polled = poller._claim_next()
    assert polled is not None
    named = taken if str(polled.pk) == str(taken.id) else waiting
    other = waiting if named is taken else taken
    worker = _woken_worker(named)
    assert worker._claim_woken() is None  # the poll had it
    assert str(worker._claim_next().pk) == str(other.id)
