"""Concurrency scenarios, run in their own process against the database the environment configures.

`python -m tests.coordination.scenarios NAME '{"param": ...}'` prints one JSON line of observations; the tests
in test_concurrency.py assert on them. The database is a scratch one prepared by the caller (migrated file
SQLite in SPARKCONTROL_DATA_DIR, or a Postgres database of its own via DATABASE_URL).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkcontrol.settings")
django.setup()

from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from accounts.models import APIToken  # noqa: E402
from accounts.tokens import apitoken_create  # noqa: E402
from audit.models import AuditEntry  # noqa: E402
from audit.services import audit_record  # noqa: E402
from coordination.models import SwapLock, WebhookAttempt, WebhookDelivery, WebhookEndpoint  # noqa: E402
from coordination.services import (  # noqa: E402
    LockHeld,
    lock_acquire,
    lock_gate,
    lock_release,
    webhook_endpoint_create,
    webhooks_enqueue,
)
from sparkcontrol.worker import WakeableWorker  # noqa: E402
from tests.coordination.receiver import serve_receiver  # noqa: E402


def in_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run target(i) in `count` threads released together by a barrier; each thread has its own connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = target(index)
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            results[index] = f"error: {type(exc).__name__}: {exc}"
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def reset() -> None:
    SwapLock.objects.all().delete()
    AuditEntry.objects.all().delete()
    APIToken.objects.all().delete()


def acquire_race(clients: int = 50, fresh: bool = True) -> dict:
    """`clients` operators POST /api/swap/lock at the same moment, on a never-used lock or a released one."""
    reset()
    if not fresh:
        grant, _ = lock_acquire(holder="earlier", ttl_seconds=60, actor="scenario")
        lock_release(token=grant.token, force=False, actor="scenario")
        AuditEntry.objects.all().delete()
    _, token = apitoken_create(name="race", scope="operate")

    def attempt(index: int) -> int:
        response = Client().post(
            "/api/swap/lock",
            {"holder": f"client-{index}", "ttl_seconds": 600},
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        return response.status_code

    statuses = in_threads(clients, attempt)
    lock = SwapLock.objects.get()
    return {
        "vendor": connection.vendor,
        "statuses": dict(Counter(map(str, statuses))),
        "holder": lock.holder,
        "epoch": lock.epoch,
        "grants_audited": AuditEntry.objects.filter(action="lock.acquire").count(),
    }


def gate_round(round_no: int) -> dict:
    """One race of a token-less real swap (gate + swap row in one transaction) against an acquire.

    Each side notes, inside its transaction and after reading the lock, its place in a shared sequence; the
    acquirer also notes when it committed and the swap side when it began. With the row lock (Postgres) or the
    IMMEDIATE transaction (SQLite) the database serialises the two, so the sequence is the commit order.
    """
    lock_release(token=None, force=True, actor="scenario")
    sequence: list[str] = []
    guard = threading.Lock()
    marks: dict[str, float] = {}
    jitter = 0.0005 * (round_no % 5)  # vary who gets there first

    def note(name: str) -> None:
        with guard:
            sequence.append(name)

    def acquirer() -> int:
        time.sleep(jitter if round_no % 2 else 0)
        with transaction.atomic():
            grant, _created = lock_acquire(holder="cron", ttl_seconds=600, actor="cron")
            note("acquire")
        marks["acquire_committed"] = time.monotonic()
        return grant.epoch

    def swapper() -> dict:
        time.sleep(0 if round_no % 2 else jitter)
        marks["swap_began"] = time.monotonic()
        try:
            with transaction.atomic():
                epoch = lock_gate(token=None, force=False, actor="swapper")
                note("gate")
                audit_record(actor="swapper", action="scenario.swap_row", target=str(round_no))
                time.sleep(0.001)  # the rest of the swap request's transaction
        except LockHeld:
            return {"passed": False}
        return {"passed": True, "epoch": epoch}

    acquired_epoch, swap = in_threads(2, lambda i: (acquirer, swapper)[i]())
    return {
        "order": sequence,
        "swap": swap,
        "acquired_epoch": acquired_epoch,
        "acquire_committed_before_swap_began": marks.get("acquire_committed", float("inf")) < marks["swap_began"],
    }


def gate_race(rounds: int = 100) -> dict:
    """`rounds` races of a token-less swap against an acquire, each from a released lock."""
    reset()
    report = [gate_round(round_no) for round_no in range(rounds)]
    return {
        "vendor": connection.vendor,
        "rounds": report,
        "swap_rows": AuditEntry.objects.filter(action="scenario.swap_row").count(),
    }


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    value = call()
    return time.monotonic() - started, value


def hanging_receiver() -> dict:
    """The embedded set-up (API and task worker in one process) while a webhook receiver hangs for 30 s.

    Times webhooks_enqueue (what the swap runner calls) and a few API calls made while the worker is stuck
    in the attempt, then waits for the attempt to be logged.
    """
    reset()
    WebhookEndpoint.objects.all().delete()
    _, token = apitoken_create(name="hang", scope="operate")
    client = Client(headers={"Authorization": f"Bearer {token}"})
    client.get("/api/swap/lock")  # warm up: first-request set-up is not what is measured
    swap = {"id": "4d1c", "model": "tiny", "state": "ready", "requested_by": "cron", "lock_epoch": 3}
    worker = WakeableWorker(interval=0.1)
    thread = threading.Thread(target=worker.run, daemon=True)
    with serve_receiver(["hang"]) as receiver:
        webhook_endpoint_create(url=receiver.url, actor="scenario")
        thread.start()
        try:
            timings: dict[str, float] = {}
            timings["webhooks_enqueue"], ids = _timed(lambda: webhooks_enqueue(event="swap_complete", swap=swap))
            receiver.wait_for(1)  # the worker is now inside the hanging attempt
            hang_began = time.monotonic()
            statuses = {}
            calls = {
                "GET /api/swap/lock": lambda: client.get("/api/swap/lock"),
                "POST /api/swap/lock": lambda: client.post(
                    "/api/swap/lock", {"holder": "cron"}, content_type="application/json"
                ),
                "POST /api/schedule": lambda: client.post(
                    "/api/schedule",
                    {"id": "nightly", "name": "n", "owner": "o", "schedule": "daily"},
                    content_type="application/json",
                ),
                "GET /api/schedule": lambda: client.get("/api/schedule"),
                "webhooks_enqueue again": lambda: webhooks_enqueue(event="swap_failed", swap=swap),
            }
            for name, call in calls.items():
                timings[name], response = _timed(call)
                statuses[name] = getattr(response, "status_code", None)
            calls_done_within_s = time.monotonic() - hang_began
            deadline = time.monotonic() + 20
            while not WebhookAttempt.objects.filter(delivery_id=ids[0]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            attempt = WebhookAttempt.objects.filter(delivery_id=ids[0]).first()
            delivery = WebhookDelivery.objects.get(pk=ids[0])
        finally:
            worker.stop()
            receiver.release.set()
            thread.join(15)
    return {
        "vendor": connection.vendor,
        "timings": timings,
        "statuses": statuses,
        "calls_done_within_s": calls_done_within_s,
        "attempt": attempt
        and {"error": attempt.error, "latency_ms": attempt.latency_ms, "status": attempt.status_code},
        "delivery": {
            "status": delivery.status,
            "attempts": delivery.attempts,
            "retry_due": bool(delivery.next_attempt_at),
        },
    }


SCENARIOS = {"acquire_race": acquire_race, "gate_race": gate_race, "hanging_receiver": hanging_receiver}

if __name__ == "__main__":
    setup_test_environment()  # lets the test Client through ALLOWED_HOSTS
    name, params = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    print(json.dumps(SCENARIOS[name](**params)))
