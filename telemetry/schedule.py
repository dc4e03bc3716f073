"""The periodic load sample, exactly once per period however many workers run (the probe sweeps' scheme).

`LoadLease` holds when the next sample is due. A tick is a django-tasks task: it claims the period with one
conditional UPDATE, and in the same transaction queues the next tick for the new due time; only then does it
sample. A tick that loses dies when the lease moved past the time it was meant for, so duplicate chains collapse
to one; `load_sampling_start()` (at serve start) and `load_sampling_revive()` (housekeeping) queue a watchdog
tick that carries the chain on if it died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from cluster.schedule import tick_results_prune
from telemetry.models import LoadLease
from telemetry.services import load_sample_period, load_sample_take, load_sampling_enabled

logger = logging.getLogger(__name__)

NEVER_RUN = datetime(2000, 1, 1, tzinfo=UTC)
WATCHDOG_GRACE = timedelta(seconds=10)
TICK_RESULTS_KEPT = timedelta(minutes=10)
FAILED_TICK_RESULTS_KEPT = timedelta(days=7)


def _claimer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"[:128]


def load_lease_ensure() -> None:
    """The lease row exists (concurrent callers are harmless)."""
    LoadLease.objects.bulk_create([LoadLease(id=1, next_due=NEVER_RUN)], ignore_conflicts=True)


def load_lease_claim(*, period: timedelta, now: datetime) -> datetime | None:
    """Claim this period: the new due time when this caller won, None when the period is taken."""
    next_due = now + period
    won = LoadLease.objects.filter(pk=1, next_due__lte=now).update(
        next_due=next_due, claimed_at=now, claimed_by=_claimer()
    )
    return next_due if won else None


def _enqueue_tick(*, due: datetime, run_after: datetime) -> None:
    from telemetry.tasks import load_sample_tick

    load_sample_tick.using(run_after=run_after).enqueue(due.isoformat())


def load_tick(*, due: str | None = None) -> str:
    """One periodic tick, run by a task worker: claim the period (queueing the next tick), then sample."""
    if not load_sampling_enabled():
        return "load sampling is off"
    now = timezone.now()
    with transaction.atomic():
        next_due = load_lease_claim(period=timedelta(seconds=load_sample_period()), now=now)
        if next_due is not None:
            _enqueue_tick(due=next_due, run_after=next_due)
    if next_due is None:
        return _tick_lost(due=due, now=now)
    _prune_tick_results(now=now)
    report = load_sample_take()
    return (
        f"load: {len(report.nodes)} node(s), {len(report.engines)} engine(s) in {report.read_s:.2f} s"
        f" ({report.cpu_s * 1000:.1f} ms CPU)"
    )


def _tick_lost(*, due: str | None, now: datetime) -> str:
    lease = LoadLease.objects.filter(pk=1).first()
    if lease is None:
        load_lease_ensure()
        _enqueue_tick(due=NEVER_RUN, run_after=now)
        return "load: lease created, tick re-queued"
    meant_for = parse_datetime(due) if due else None
    if meant_for is not None and lease.next_due > meant_for:
        return f"load: this period was sampled by {lease.claimed_by or 'another worker'}"
    _enqueue_tick(due=lease.next_due, run_after=lease.next_due)
    return f"load: not due until {lease.next_due.isoformat()}, re-queued"


def _prune_tick_results(*, now: datetime) -> None:
    from telemetry.tasks import load_sample_tick

    tick_results_prune(
        task_path=load_sample_tick.module_path, now=now, kept=TICK_RESULTS_KEPT, failed_kept=FAILED_TICK_RESULTS_KEPT
    )


def load_sampling_revive(*, now: datetime | None = None) -> bool:
    """Queue a watchdog tick when the chain is overdue by more than the grace (cheap: one read of one row)."""
    if not load_sampling_enabled():
        return False
    now = now or timezone.now()
    lease = LoadLease.objects.filter(pk=1, next_due__lt=now - WATCHDOG_GRACE).first()
    if lease is None:
        return False
    _enqueue_tick(due=lease.next_due, run_after=now)
    return True


def load_sampling_start() -> None:
    """Call once when a serving process starts: make sure the periodic load sample has a live tick chain.

    Errors are logged, never raised: load charts must not stop a server.
    """
    if not load_sampling_enabled():
        return
    try:
        load_lease_ensure()
        lease = LoadLease.objects.get(pk=1)
        now = timezone.now()
        run_after = now if lease.next_due <= now else lease.next_due + WATCHDOG_GRACE
        _enqueue_tick(due=lease.next_due, run_after=run_after)
    except Exception:  # noqa: BLE001 - a database or task-backend problem must not stop the server starting
        logger.exception("could not schedule the periodic load sample")
