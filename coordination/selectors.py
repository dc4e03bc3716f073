"""Reads: the lock as the API shows it, webhook endpoints, and the schedule registry with stale marks."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import QuerySet

from coordination import clock
from coordination.models import ScheduledJob, SwapLock, WebhookEndpoint

STALE_AFTER = timedelta(days=1)


def lock_view(*, lock: SwapLock | None, at: datetime) -> dict[str, Any]:
    """The `GET /api/swap/lock` shape of a lock row at time `at`; never the token."""
    if lock is None or not lock.is_held(at):
        return {
            "locked": False,
            "holder": None,
            "acquired_at": None,
            "expires_at": None,
            "remaining_s": 0.0,
            "epoch": lock.epoch if lock else 0,
            "forced": lock.forced if lock else False,
        }
    return {
        "locked": True,
        "holder": lock.holder,
        "acquired_at": lock.acquired_at,
        "expires_at": lock.expires_at,
        "remaining_s": round((lock.expires_at - at).total_seconds(), 1),
        "epoch": lock.epoch,
        "forced": lock.forced,
    }


class _CompiledLockRead:
    """The lock row's SELECT (and its SELECT ... FOR UPDATE), compiled by the ORM once per database vendor and then
    only executed.

    `GET /api/swap/lock` is the API's most frequent read (every cron and agent polls it), and a refused acquire (423)
    is the most frequent write attempt; building the query (clone, filter, compile, converters) was ~40 % of the
    read's CPU, the SQL itself a few percent. The SQL, the column order and the value converters (SQLite's
    datetimes and booleans) are the ORM's own; only their reuse is ours.
    """

    Compiled = tuple[str, tuple[Any, ...], list[str], list[tuple[int, list[Any], Any]]]

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str, bool], _CompiledLockRead.Compiled] = {}
        self._guard = threading.Lock()

    def _compile(self, alias: str, for_update: bool) -> Compiled:
        rows = SwapLock.objects.using(alias).filter(pk=SwapLock.SINGLETON_ID).order_by()
        if for_update:
            rows = rows.select_for_update()
        compiler = rows[:1].query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        columns = [column.target.attname for column, _, _ in compiler.select]
        converters = compiler.get_converters([column for column, _, _ in compiler.select])
        return sql, tuple(params), columns, [(pos, funcs, expr) for pos, (funcs, expr) in converters.items()]

    def read(self, *, alias: str = DEFAULT_DB_ALIAS, for_update: bool = False) -> SwapLock | None:
        """The lock row, or None before the first grant; `for_update` locks it until the transaction ends."""
        connection = connections[alias]
        if for_update and not connection.in_atomic_block:
            raise transaction.TransactionManagementError("the lock row is read for update only inside a transaction")
        key = (alias, connection.vendor, for_update)
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._guard:
                compiled = self._compiled.setdefault(key, self._compile(alias, for_update))
        sql, params, columns, converters = compiled
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row)
        for pos, funcs, expr in converters:
            for convert in funcs:
                values[pos] = convert(values[pos], expr, connection)
        return SwapLock.from_db(alias, columns, values)


_lock_read = _CompiledLockRead()


def lock_row(*, for_update: bool = False) -> SwapLock | None:
    """The lock row (None before the first grant); `for_update` (inside a transaction) locks it until the end."""
    return _lock_read.read(for_update=for_update)


def lock_status() -> dict[str, Any]:
    """The lock as it stands now (free with epoch 0 when it was never granted)."""
    return lock_view(lock=_lock_read.read(), at=clock.now())


def lock_refusal() -> str | None:
    """Why a change to the GPU must wait: "the swap lock is held by X until T" while it is held, else None.

    Inside a transaction the lock row stays locked until it ends, so no grant slips in between the check and the
    change it guards.
    """
    lock = lock_row(for_update=transaction.get_connection().in_atomic_block)
    if lock is None or not lock.is_held(clock.now()):
        return None
    return f"the swap lock is held by {lock.holder!r} until {lock.expires_at.isoformat()}"


def webhook_endpoint_list() -> QuerySet[WebhookEndpoint]:
    """Every configured endpoint, by URL."""
    return WebhookEndpoint.objects.order_by("url")


def webhook_endpoint_find(*, ref: str) -> WebhookEndpoint | None:
    """The endpoint with this numeric id or this exact URL."""
    if ref.isdigit():
        return WebhookEndpoint.objects.filter(pk=int(ref)).first()
    return WebhookEndpoint.objects.filter(url=ref).first()


def schedule_view(*, job: ScheduledJob, at: datetime) -> dict[str, Any]:
    """The `GET /api/schedule` shape of one entry; stale when its next run is over a day in the past."""
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "schedule": job.schedule,
        "next_run": job.next_run,
        "model": job.model or None,
        "description": job.description,
        "stale": job.next_run is not None and job.next_run < at - STALE_AFTER,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def schedule_list() -> list[dict[str, Any]]:
    """Every registered job, soonest `next_run` first, those without one last."""
    at = clock.now()
    return [schedule_view(job=job, at=at) for job in ScheduledJob.objects.all()]
