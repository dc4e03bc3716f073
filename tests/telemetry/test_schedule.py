"""The periodic load sample: one claimer per period, the next tick queued with the claim, duplicate chains die."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from cluster.models import SparkHost
from telemetry.models import LoadLease, LoadSample
from telemetry.schedule import load_lease_ensure, load_sampling_revive, load_sampling_start, load_tick
from telemetry.tasks import load_sample_tick

pytestmark = pytest.mark.django_db


@pytest.fixture
def nothing_to_read(db) -> None:  # type: ignore[no-untyped-def]
    """No Spark and no vLLM to read: a tick samples only the gateway of this process."""
    SparkHost.objects.all().delete()
    from cluster.models import Service

    Service.objects.all().delete()


def _queued() -> list[DBTaskResult]:
    return list(DBTaskResult.objects.filter(task_path=load_sample_tick.module_path, status="READY"))


def test_a_tick_claims_the_period_queues_the_next_and_samples(nothing_to_read):
    load_lease_ensure()
    summary = load_tick(due=None)
    assert summary.startswith("load: 0 node(s), 0 engine(s)")
    lease = LoadLease.objects.get()
    assert lease.next_due > timezone.now() and lease.claimed_by
    assert [task.run_after for task in _queued()] == [lease.next_due]
    assert LoadSample.objects.filter(node="").count() == 1  # the gateway's row


def test_a_second_tick_in_the_same_period_dies_quietly(nothing_to_read):
    load_lease_ensure()
    load_tick(due=None)
    due = LoadLease.objects.get().next_due
    assert "was sampled by" in load_tick(due=(due - timedelta(seconds=10)).isoformat())
    assert LoadSample.objects.count() == 1 and len(_queued()) == 1


def test_start_and_revive_queue_a_watchdog_only_when_needed(nothing_to_read, settings):
    load_sampling_start()
    assert len(_queued()) == 1  # a fresh lease is due: a tick at once
    load_tick(due=None)
    assert load_sampling_revive() is False  # the chain is alive
    LoadLease.objects.update(next_due=timezone.now() - timedelta(minutes=5))
    assert load_sampling_revive() is True  # the chain died (a worker killed mid-tick): a watchdog carries it on
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "LOAD_SAMPLING": False}
    assert load_tick(due=None) == "load sampling is off"
    assert load_sampling_revive() is False
