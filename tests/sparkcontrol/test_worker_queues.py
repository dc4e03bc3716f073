"""The embedded task worker keeps a thread for swaps: webhook receivers that never answer do not hold a swap queued."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from coordination.models import WebhookDelivery, WebhookEndpoint
from coordination.services import webhook_secret_generate, webhooks_enqueue
from sparkcontrol.worker import start_embedded_worker
from swaps.models import Swap, SwapEvent
from swaps.services import swap_request


class Tarpit:
    """A real HTTP server that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    yield pit
    pit.close()


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.django_db(transaction=True)
def test_hanging_webhook_receivers_do_not_hold_the_next_swap_queued(tarpit, settings, model_factory):
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_BACKOFF_SECONDS": [0.0]}
    model_factory("tiny")
    for index in range(10):
        WebhookEndpoint.objects.create(
            url=f"{tarpit.url}?n={index}", secret=webhook_secret_generate(), events=["swap_complete"]
        )
    workers = start_embedded_worker(interval=0.2)
    try:
        webhooks_enqueue(event="swap_complete", swap={"id": "00000000-0000-0000-0000-000000000000", "model": "x"})
        # Every worker that takes webhook deliveries is now inside one, waiting on a receiver that never answers.
        assert _wait(lambda: len(tarpit.accepted) >= 1, timeout=5), "no webhook delivery was attempted"
        time.sleep(0.3)
        requested = time.monotonic()
        swap = swap_request(model_key="tiny", dry_run=False, actor="test")
        started = _wait(lambda: Swap.objects.get(pk=swap.pk).state != "queued", timeout=3)
        waited = time.monotonic() - requested
        states = list(SwapEvent.objects.filter(swap=swap).order_by("seq").values_list("state", flat=True))
        assert started, f"the swap stayed queued for {waited:.1f} s behind webhook deliveries; events {states}"
        assert waited < 2, waited
        assert WebhookDelivery.objects.count() == 10
    finally:
        for worker in workers:
            worker.stop()
        tarpit.close()
        _wait(lambda: not any(worker.running_task for worker in workers), timeout=10)


def test_an_enqueued_task_wakes_only_the_workers_that_take_its_queue() -> None:
    """A swap's enqueue must not set every embedded worker claiming at once (each claim is an exclusive
    transaction, run at the moment the swap's own worker claims)."""
    from types import SimpleNamespace

    from sparkcontrol.worker import EMBEDDED_QUEUES, WakeableWorker

    workers = [WakeableWorker(interval=60.0, queue_names=q, excluded_queue_names=x) for q, x in EMBEDDED_QUEUES]

    def woken(queue_name: str | None) -> list[list[str]]:
        for worker in workers:
            worker.wake.clear()
        task = None if queue_name is None else SimpleNamespace(queue_name=queue_name)
        for worker in workers:
            worker._on_enqueued(task_result=SimpleNamespace(task=task))
        return [worker.queue_names for worker in workers if worker.wake.is_set()]

    assert woken("swaps") == [["swaps"]]
    assert woken("webhooks") == [["webhooks"]]
    assert woken("default") == [["*"]]  # the catch-all takes any queue the others leave
    assert len(woken(None)) == len(workers)  # not known: everyone looks


@pytest.mark.django_db(transaction=True)
def test_idle_workers_leave_the_looking_to_one_scout_and_a_delayed_task_still_runs_when_due() -> None:
    from datetime import timedelta

    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from cluster.tasks import probe_sweep

    workers = start_embedded_worker(interval=0.1)
    try:
        time.sleep(0.3)  # each worker's first search, at its start
        before = [worker.claims for worker in workers]
        time.sleep(1.0)  # ten of the scout's looks, with nothing to find
        assert [worker.claims for worker in workers] == before, "idle workers searched for tasks on their own"
        due = timezone.now() + timedelta(seconds=0.6)
        # Not ready when enqueued: its enqueue wakes the catch-all worker, which finds nothing; the scout must.
        result = probe_sweep.using(run_after=due).enqueue("status", [])
        assert _wait(lambda: DBTaskResult.objects.get(pk=result.id).status == "SUCCESSFUL", timeout=5)
        started = DBTaskResult.objects.get(pk=result.id).started_at
        assert started >= due
        assert (started - due).total_seconds() < 1.0, f"a due task waited {started - due} for a worker"
        searched = [worker.queue_names for worker, was in zip(workers, before, strict=True) if worker.claims != was]
        assert searched == [["*"]], f"the scout woke workers of other queues too: {searched}"
    finally:
        for worker in workers:
            worker.stop()
        _wait(lambda: not any(worker.running_task for worker in workers), timeout=10)


@pytest.mark.django_db(transaction=True)
def test_only_the_swaps_worker_keeps_its_database_connection_while_it_waits() -> None:
    """An idle worker of the other queues holds no SQLite connection (its caches) while it sleeps; the swaps' worker
    keeps its own as long as CONN_MAX_AGE lets it, as `serve` sets it, for the reads a woken swap starts with."""
    from django.db import connection

    from sparkcontrol.worker import SWAPS_QUEUE, WakeableWorker, embedded_workers

    workers = embedded_workers(interval=60.0)
    assert [worker.queue_names for worker in workers if worker.keep_connection] == [[SWAPS_QUEUE]]

    kept = connection.settings_dict.get("CONN_MAX_AGE")
    connection.settings_dict["CONN_MAX_AGE"] = 600  # what `serve` sets on SQLite (keep_database_connections)
    try:
        for keep in (True, False):
            worker = WakeableWorker(interval=60.0, queue_names=["webhooks"], keep_connection=keep)
            open_while_waiting: list[bool] = []

            def wait(timeout: float | None = None, worker: WakeableWorker = worker, seen: list = open_while_waiting):
                seen.append(connection.connection is not None)  # the worker's own thread's connection
                worker.running = False
                return True

            worker.wake.wait = wait  # type: ignore[method-assign]
            thread = threading.Thread(target=worker.run)
            thread.start()
            thread.join(10)
            assert open_while_waiting == [keep]
    finally:
        connection.settings_dict["CONN_MAX_AGE"] = kept
