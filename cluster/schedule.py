"""Periodic sweeps without an extra process, exactly once per period however many workers run.

Each sweep kind has a `SweepLease` row holding when it is next due. A periodic tick is a django-tasks task: when
a worker runs it, it claims the period with one conditional UPDATE (`... SET next_due = now + period WHERE
next_due <= now`): on SQLite (writes serialised) and on Postgres (the second UPDATE waits for the first and then
re-checks the condition) exactly one claimer matches a row per period. In the same transaction the winner enqueues
the next tick with `run_after` = the new due time, so a claimed period always has its successor queued; only then
does it sweep.

Ticks that lose die quietly when the lease has moved past the time they were meant for (someone else owns the
chain), so duplicate chains (one per serving process start) collapse to one. `probes_schedule_start()` at boot
queues a watchdog tick per kind, due a little after the lease: if the chain is alive the watchdog loses and dies,
if it died (a worker killed mid-claim) the watchdog claims and carries on.
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

from cluster.models import ClusterSettings, SweepKind, SweepLease
from cluster.services import cluster_settings_get
from cluster.sweeps import SweepReport, sweep_run

logger = logging.getLogger(__name__)

NEVER_RUN = datetime(2000, 1, 1, tzinfo=UTC)
# How late a chain's tick may run before a watchdog takes the period over (a worker busy with a long task).
WATCHDOG_GRACE = timedelta(seconds=10)
TICK_RESULTS_KEPT = timedelta(hours=1)
FAILED_TICK_RESULTS_KEPT = timedelta(days=7)


def sweep_period(*, sweep: str, cluster: ClusterSettings) -> timedelta:
    """The configured period of a sweep kind (ClusterSettings.probe_*_interval_s)."""
    seconds = {
        SweepKind.STATUS: cluster.probe_status_interval_s,
        SweepKind.DEEP: cluster.probe_deep_interval_s,
        SweepKind.CONNECTIVITY: cluster.probe_connectivity_interval_s,
    }[SweepKind(sweep)]
    return timedelta(seconds=max(1, seconds))


def sweep_timeout(*, sweep: str, cluster: ClusterSettings) -> float:
    """The per-probe deadline of a sweep kind."""
    return cluster.probe_deep_timeout_s if sweep == SweepKind.DEEP else cluster.probe_timeout_s


def sweep_leases_ensure() -> None:
    """One lease row per sweep kind; concurrent callers are harmless (conflicts are ignored)."""
    SweepLease.objects.bulk_create(
        [SweepLease(sweep=kind, next_due=NEVER_RUN) for kind in SweepKind.values], ignore_conflicts=True
    )


def _claimer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"[:128]


def sweep_lease_claim(
    *, sweep: str, period: timedelta, now: datetime | None = None, claimer: str = ""
) -> datetime | None:
    """Claim this period of a sweep: the new due time when this caller won, None when the period is taken."""
    now = now or timezone.now()
    next_due = now + period
    won = SweepLease.objects.filter(sweep=sweep, next_due__lte=now).update(
        next_due=next_due, claimed_at=now, claimed_by=claimer or _claimer()
    )
    return next_due if won else None


def _enqueue_tick(*, sweep: str, due: datetime, run_after: datetime) -> None:
    from cluster.tasks import probe_sweep_tick

    probe_sweep_tick.using(run_after=run_after).enqueue(sweep, due.isoformat())


def sweep_tick(*, sweep: str, due: str | None = None) -> str:
    """One periodic tick, run by a task worker: claim the period (queueing the next tick), then sweep."""
    SweepKind(sweep)
    now = timezone.now()
    with transaction.atomic():
        cluster = cluster_settings_get()
        next_due = sweep_lease_claim(sweep=sweep, period=sweep_period(sweep=sweep, cluster=cluster), now=now)
        if next_due is not None:
            # Same transaction as the claim: a claimed period always has its successor queued.
            _enqueue_tick(sweep=sweep, due=next_due, run_after=next_due)
    if next_due is None:
        return _tick_lost(sweep=sweep, due=due, now=now)
    if sweep == SweepKind.STATUS:
        probes_schedule_revive(now=now)
        _prune_tick_results(now=now)
    report = sweep_run(sweep=sweep, timeout=sweep_timeout(sweep=sweep, cluster=cluster))
    return _summary(report)


def _tick_lost(*, sweep: str, due: str | None, now: datetime) -> str:
    lease = SweepLease.objects.filter(sweep=sweep).first()
    if lease is None:
        sweep_leases_ensure()
        _enqueue_tick(sweep=sweep, due=NEVER_RUN, run_after=now)
        return f"{sweep}: lease created, tick re-queued"
    meant_for = parse_datetime(due) if due else None
    if meant_for is not None and lease.next_due > meant_for:
        return f"{sweep}: this period was swept by {lease.claimed_by or 'another worker'}"
    # Not due yet for this worker's clock (clocks differ between machines): try again when it is.
    _enqueue_tick(sweep=sweep, due=lease.next_due, run_after=lease.next_due)
    return f"{sweep}: not due until {lease.next_due.isoformat()}, re-queued"


def tick_results_prune(
    *, task_path: str, now: datetime, kept: timedelta = TICK_RESULTS_KEPT, failed_kept: timedelta | None = None
) -> None:
    """A periodic tick (probe sweeps, load samples, scheduled actions) runs every few seconds for ever: keep its
    finished task rows for a while, not for ever; failed ones longer (`failed_kept`; None keeps them for good)."""
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.filter(task_path=task_path, status="SUCCESSFUL", finished_at__lt=now - kept).delete()
    if failed_kept is not None:
        DBTaskResult.objects.filter(task_path=task_path, status="FAILED", finished_at__lt=now - failed_kept).delete()


def _prune_tick_results(*, now: datetime) -> None:
    from cluster.tasks import probe_sweep_tick

    tick_results_prune(task_path=probe_sweep_tick.module_path, now=now, failed_kept=FAILED_TICK_RESULTS_KEPT)


def _summary(report: SweepReport) -> str:
    counts = ", ".join(f"{count} {status}" for status, count in sorted(report.counts().items())) or "nothing probed"
    return f"{report.sweep}: {counts} in {report.duration_s:.2f} s"


def probes_schedule_revive(*, now: datetime | None = None) -> int:
    """Queue a watchdog tick for every sweep kind overdue by more than the grace; returns how many.

    Cheap (one read of three rows): the status tick calls it, and a serving process may call it from its
    housekeeping loop. A watchdog that finds the chain alive dies, so extra calls are harmless.
    """
    now = now or timezone.now()
    revived = 0
    for lease in SweepLease.objects.filter(next_due__lt=now - WATCHDOG_GRACE):
        _enqueue_tick(sweep=lease.sweep, due=lease.next_due, run_after=now)
        revived += 1
    return revived


def probes_schedule_start() -> None:
    """Call once when a serving process starts: make sure every periodic sweep has a live tick chain.

    Queues one tick per sweep kind: at once when the kind is due (a fresh install, or everything stopped), else
    a watchdog just after the lease's due time. Errors are logged, never raised: probes must not stop a server.
    """
    try:
        sweep_leases_ensure()
        now = timezone.now()
        for lease in SweepLease.objects.all():
            run_after = now if lease.next_due <= now else lease.next_due + WATCHDOG_GRACE
            _enqueue_tick(sweep=lease.sweep, due=lease.next_due, run_after=run_after)
    except Exception:  # noqa: BLE001 - a database or task-backend problem must not stop the server starting
        logger.exception("could not schedule the periodic probe sweeps")
