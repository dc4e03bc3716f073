"""The task worker that runs inside the serving process on the embedded default.

django-tasks-db's `Worker` polls the database every `interval` seconds. Here it runs in a thread and is also
woken by the `task_enqueued` signal, so a swap enqueued by this process starts at once instead of after the
next poll; tasks enqueued by other processes are still found by the poll. A task the signal names is claimed by
its id, with one conditional UPDATE, instead of the poll's search for the first ready task in an exclusive
transaction (on SQLite). Whoever's UPDATE changes the row runs the task, so each task still runs once, whichever
process or poll gets there first.

Before it claims a swap named by the signal, the swaps' worker sends the swap's first remote command (the launcher's
read-only capabilities probe, `swaps.runner.swap_prepare`): the claim, an exclusive write, then overlaps with the
head's answer. The request's own thread is left alone, so the answer to the POST is not held up by it.

Each queue has a thread of its own (`EMBEDDED_QUEUES`): a swap never waits behind webhook deliveries to receivers
that do not answer, nor behind probe sweeps, and a slow webhook receiver does not stall the probes either.

The threads do not poll on their own: one `WorkerScout` looks for ready tasks every `interval` with a single read
and wakes only the threads that take a queue with one. Six threads each claiming in an exclusive transaction every
interval cost ~8 % of a core at the tests' 0.2 s, and each claim held the interpreter while the serving loop
waited for it (the gateway's time to first token rose by ~3 ms in a process that ran the worker).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections
from django.db.utils import OperationalError
from django.utils import timezone
from django_tasks.base import TaskResultStatus
from django_tasks.signals import task_enqueued
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction

logger = logging.getLogger(__name__)

SWAPS_QUEUE = "swaps"
WEBHOOKS_QUEUE = "webhooks"
ACTIONS_QUEUE = "actions"  # scheduled actions: a run may wait minutes for the swap lock or for its swap
DOWNLOADS_QUEUE = "downloads"  # model downloads: each may run for an hour
SERVICES_QUEUE = "services"  # service restarts: each waits for the service's probe to pass again
# A worker's own look when neither an enqueue nor the scout woke it: only a safety net should the scout stop.
SCOUTED_IDLE_SECONDS = 30.0
# One thread per entry: (queues it takes, queues it leaves alone). The last one takes any other queue. Only the
# swaps' thread keeps its database connection while it waits: a woken swap's first reads are on its dispatch path
# (M2). The others close theirs (on SQLite ~0.5 MiB each of schema, page and statement caches, held for hours by
# threads that seldom run) and connect again (~1 ms) for their next task.
EMBEDDED_QUEUES: list[tuple[list[str], list[str]]] = [
    ([SWAPS_QUEUE], []),
    ([WEBHOOKS_QUEUE], []),
    ([ACTIONS_QUEUE], []),
    ([DOWNLOADS_QUEUE], []),
    ([SERVICES_QUEUE], []),
    (["*"], [SWAPS_QUEUE, WEBHOOKS_QUEUE, ACTIONS_QUEUE, DOWNLOADS_QUEUE, SERVICES_QUEUE]),
]


class WakeableWorker(Worker):
    """A db_worker loop that sleeps on an Event instead of time.sleep, so enqueueing wakes it."""

    def __init__(
        self,
        *,
        interval: float,
        queue_names: list[str] | None = None,
        excluded_queue_names: list[str] | None = None,
        idle_wait: float | None = None,
        keep_connection: bool = True,
    ) -> None:
        super().__init__(
            queue_names=queue_names or ["*"],
            interval=interval,
            batch=False,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=f"embedded-{uuid.uuid4().hex[:8]}",
            excluded_queue_names=list(excluded_queue_names or []),
        )
        self.wake = threading.Event()
        # Tasks enqueued by this process for this worker, not yet tried: (id, swap id for a swap task, else None).
        self.woken: deque[tuple[str, str | None]] = deque()
        self.idle_wait = interval if idle_wait is None else idle_wait  # the longest sleep when nothing wakes it
        self.claims = 0  # searches for a ready task (each an exclusive transaction on SQLite)
        self.keep_connection = keep_connection  # while it waits for work, as long as CONN_MAX_AGE lets it

    def takes(self, queue_name: str | None) -> bool:
        """Whether this worker claims tasks of `queue_name` (unknown: assume it does)."""
        if queue_name is None:
            return True
        if queue_name in self.excluded_queue_names:
            return False
        return self.process_all_queues or queue_name in self.queue_names

    def _on_enqueued(self, **kwargs: Any) -> None:
        # Only the worker that takes the task's queue wakes: the others would each run a claim in an exclusive
        # transaction at the very moment the swap's worker claims, and find nothing.
        task_result = kwargs.get("task_result")
        task = getattr(task_result, "task", None)
        if self.takes(getattr(task, "queue_name", None)):
            if getattr(task_result, "id", None):
                self.woken.append((str(task_result.id), _swap_of(task_result)))
            self.wake.set()

    def stop(self) -> None:
        self.running = False
        self.wake.set()

    def _claim_woken(self) -> DBTaskResult | None:
        """The first task named by the signal that is still ready (not yet claimed, not delayed), now claimed."""
        while self.woken:
            task_id, swap_id = self.woken.popleft()
            if swap_id is not None:
                _swap_prepare(swap_id)
            ready = DBTaskResult.objects.ready().filter(pk=task_id, backend_name=self.backend_name)
            try:
                # A READY row has never run, so its worker list is empty: this worker is the first.
                claimed = ready.update(
                    status=TaskResultStatus.RUNNING, started_at=timezone.now(), worker_ids=[self.worker_id]
                )
            except OperationalError:
                return None  # the database is busy; the poll after the next wake-up finds it
            if claimed:
                return DBTaskResult.objects.get(pk=task_id)
        return None

    def _claim_next(self) -> DBTaskResult | None:
        tasks = DBTaskResult.objects.ready().filter(backend_name=self.backend_name)
        if not self.process_all_queues:
            tasks = tasks.filter(queue_name__in=self.queue_names)
        if self.excluded_queue_names:
            tasks = tasks.exclude(queue_name__in=self.excluded_queue_names)
        self.claims += 1
        with exclusive_transaction(tasks.db):
            try:
                task_result = tasks.get_locked()
            except OperationalError:
                return None  # the database is busy; try again after the next wake-up
            if task_result is not None:
                task_result.claim(self.worker_id)
            return task_result

    def run(self) -> None:
        task_enqueued.connect(self._on_enqueued, weak=False)
        logger.info(
            "embedded task worker %s started (queues %s%s)",
            self.worker_id,
            ",".join(self.queue_names),
            f" but {','.join(self.excluded_queue_names)}" if self.excluded_queue_names else "",
        )
        try:
            while self.running:
                close_old_connections()
                self.wake.clear()
                task_result = self._claim_woken() or self._claim_next()
                if task_result is not None:
                    self.run_task(task_result)
                    continue
                if self.keep_connection:
                    close_old_connections()
                else:
                    connections.close_all()
                self.wake.wait(self.idle_wait)
        finally:
            task_enqueued.disconnect(self._on_enqueued)
            close_old_connections()


def _swap_of(task_result: Any) -> str | None:
    """The swap id of a swap task's result (its first argument); None for any other task."""
    from swaps.tasks import swap_execute

    task, args = getattr(task_result, "task", None), getattr(task_result, "args", None)
    if getattr(task, "module_path", None) != swap_execute.module_path or not args:
        return None
    return str(args[0])


def _swap_prepare(swap_id: str) -> None:
    from swaps.runner import swap_prepare

    try:
        swap_prepare(swap_id=swap_id)
    except Exception:  # noqa: BLE001 - only a head start is lost: the run asks the launcher itself
        logger.exception("could not send swap %s's first command before claiming it", swap_id)


def embedded_workers(*, interval: float) -> list[WakeableWorker]:
    """One worker per entry of `EMBEDDED_QUEUES`, not started."""
    return [
        WakeableWorker(
            interval=interval,
            queue_names=queues,
            excluded_queue_names=excluded,
            idle_wait=max(interval, SCOUTED_IDLE_SECONDS),
            keep_connection=SWAPS_QUEUE in queues,
        )
        for queues, excluded in EMBEDDED_QUEUES
    ]


def start_embedded_worker(*, interval: float, loop: asyncio.AbstractEventLoop | None = None) -> list[WakeableWorker]:
    """Start one worker thread per entry of `EMBEDDED_QUEUES` and return them for stopping.

    With `loop` (the serving process's event loop), the threads are started from it, as `sync_to_async` starts
    threads: a push they make (`async_to_sync(group_send)`) then runs on that loop, which wakes at once. Started
    plainly, each push runs on a throw-away loop of its own, and the in-memory channel layer's queues belong to the
    server's loop: dashboards got the message only when something else next woke the server (up to a second).
    """
    workers = embedded_workers(interval=interval)
    for index, worker in enumerate(workers):
        name = f"task-worker-{index}"
        if loop is None:
            threading.Thread(target=worker.run, name=name, daemon=True).start()
        else:
            loop.call_soon_threadsafe(_start_from_loop, worker, name)
    scout = WorkerScout(workers, interval=interval)
    threading.Thread(target=scout.run, name="task-worker-scout", daemon=True).start()
    return workers


class WorkerScout:
    """Looks for ready tasks every `interval` for all the embedded workers, with one read (no transaction), and
    wakes the workers that take a queue with one: tasks enqueued by other processes (`manage.py` commands, other
    web processes) and tasks whose `run_after` came. It ends once every worker has stopped."""

    def __init__(self, workers: list[WakeableWorker], *, interval: float) -> None:
        self.workers = workers
        self.interval = interval
        self.failures = 0

    def look(self) -> set[str]:
        """Wake the workers of the queues that have a ready task; those queues."""
        ready = DBTaskResult.objects.ready().filter(backend_name="default").order_by()
        queues = set(ready.values_list("queue_name", flat=True).distinct())
        for worker in self.workers:
            if any(worker.takes(queue_name) for queue_name in queues):
                worker.wake.set()
        return queues

    def run(self) -> None:
        try:
            while any(worker.running for worker in self.workers):
                try:
                    self.look()
                    self.failures = 0
                except Exception:  # noqa: BLE001 - the scout must outlive a busy or restarting database
                    self.failures += 1
                    if self.failures in (1, 10) or self.failures % 100 == 0:
                        logger.exception("the task workers' scout could not look for ready tasks (%d)", self.failures)
                    close_old_connections()
                time.sleep(self.interval)
        finally:
            close_old_connections()


def _start_from_loop(worker: WakeableWorker, name: str) -> None:
    from sparkcontrol.serving import DaemonThreadExecutor

    run = sync_to_async(worker.run, thread_sensitive=False, executor=DaemonThreadExecutor(name))
    asyncio.ensure_future(run()).add_done_callback(_report_exit)


def _report_exit(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("embedded task worker stopped", exc_info=future.exception())
