"""How `serve` runs Django: sync views through the pooled handler, async views through Django's own ASGI handler,
and task workers started from the server's loop so their pushes run on it."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.urls import resolve

from sparkcontrol.serving import DaemonThreadExecutor, PooledSyncHandler


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9999),
    }


async def _call(app, scope: dict, body: bytes = b"") -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    messages: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        messages.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return messages[0]["status"], body


@pytest.mark.django_db(transaction=True)
def test_a_sync_view_is_answered_from_the_pool_and_an_async_one_by_the_async_handler():
    forwarded: list[str] = []

    async def async_handler(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        forwarded.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    handler = PooledSyncHandler(threads=2, async_handler=async_handler)
    status, body = asyncio.run(_call(handler, _scope("/api/health")))
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert iscoroutinefunction(resolve("/v1/models").func)
    status, _ = asyncio.run(_call(handler, _scope("/v1/models")))
    assert status == 299 and forwarded == ["/v1/models"]
    status, body = asyncio.run(_call(handler, _scope("/api/swap/lock")))
    assert status == 401 and b"authentication required" in body


def test_a_thread_started_from_the_loop_runs_its_async_calls_on_that_loop():
    """What the embedded workers rely on: their async_to_sync(group_send) must run on the server's loop."""
    seen: list[asyncio.AbstractEventLoop] = []

    async def where() -> None:
        seen.append(asyncio.get_running_loop())

    def blocking_worker() -> str:
        async_to_sync(where)()
        return threading.current_thread().name

    async def main() -> tuple[str, asyncio.AbstractEventLoop]:
        name = await sync_to_async(blocking_worker, thread_sensitive=False, executor=DaemonThreadExecutor("w-1"))()
        return name, asyncio.get_running_loop()

    name, loop = asyncio.run(main())
    assert name == "w-1"
    assert seen == [loop]


def test_several_serving_processes_need_a_shared_channel_layer(settings):
    from django.core.management import CommandError, call_command

    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL"):
        call_command("serve", workers=2)


@pytest.mark.django_db(transaction=True)
def test_the_served_application_keeps_the_body_limit_at_the_edge():
    from django.conf import settings

    from sparkcontrol.serving import serving_application

    application = serving_application(threads=1)
    too_big = str(settings.API_MAX_BODY_BYTES + 1).encode()
    scope = {
        **_scope("/api/swap"),
        "method": "POST",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", too_big)],
    }
    status, _ = asyncio.run(_call(application, scope))
    assert status == 413
    status, _ = asyncio.run(_call(application, _scope("/api/health")))
    assert status == 200


@pytest.mark.django_db(transaction=True)
def test_a_push_made_by_a_sync_view_runs_on_the_serving_loop(monkeypatch):
    """A lock change is pushed from the view's thread; the in-memory layer's queues belong to the serving loop, so
    the push must run there (not on a throw-away loop of its own, which would also touch them from another thread)."""
    from channels.layers import get_channel_layer

    from accounts.tokens import apitoken_create
    from sparkcontrol.serving import serving_application

    _, token = apitoken_create(name="serving-push", scope="operate")
    application = serving_application(threads=2)
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode())]
    layer = get_channel_layer()
    original = layer.group_send
    loops: list[asyncio.AbstractEventLoop] = []

    async def group_send(group: str, message: dict) -> None:
        loops.append(asyncio.get_running_loop())
        await original(group, message)

    monkeypatch.setattr(layer, "group_send", group_send)

    async def main() -> tuple[int, asyncio.AbstractEventLoop]:
        body = json.dumps({"holder": "test", "ttl_seconds": 60}).encode()
        scope = {**_scope("/api/swap/lock"), "method": "POST", "headers": headers}
        status, _ = await _call(application, scope, body)
        return status, asyncio.get_running_loop()

    status, loop = asyncio.run(main())
    assert status == 201
    assert loops == [loop]


def test_serve_refuses_a_django_it_was_not_verified_against_and_says_how_to_serve_anyway(monkeypatch, settings):
    import socket

    import django
    from django.core.management import CommandError, call_command

    from sparkcontrol.serving import HandlerUnverified, serving_server

    monkeypatch.setattr(django, "VERSION", (6, 1, 0, "final", 0))
    settings.FAST_HANDLER = True
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CommandError) as refused:
        call_command("serve", port=port, no_worker=True)
    message = str(refused.value)
    assert "verified against Django 5.2 only; this is Django 6.1" in message
    assert "set SPARKCONTROL_FAST_HANDLER=0" in message and "test_serving_conformance.py" in message
    with pytest.raises(HandlerUnverified):
        serving_server(threads=1, endpoints=[], verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_without_the_fast_handler_serve_runs_djangos_own(monkeypatch, settings):
    """SPARKCONTROL_FAST_HANDLER=0: the server carries the project's ASGI application as it is, whatever the Django
    version, and its edge checks get a pool of their own."""
    import django

    from sparkcontrol.asgi import application
    from sparkcontrol.env import env_bool
    from sparkcontrol.serving import ThreadPool, serving_server

    monkeypatch.setenv("SPARKCONTROL_FAST_HANDLER", "0")
    assert env_bool("SPARKCONTROL_FAST_HANDLER", True) is False  # what settings.py parses it with
    monkeypatch.setattr(django, "VERSION", (6, 1, 0, "final", 0))
    settings.FAST_HANDLER = False
    server = serving_server(threads=2, fast=False, endpoints=["tcp:port=0:interface=127.0.0.1"], verbosity=0)
    assert server.application is application
    assert isinstance(server.edge_pool, ThreadPool) and server.edge_pool.threads == 2
    status, body = asyncio.run(_call(server.application, _scope("/api/health")))
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_the_pool_runs_a_trickle_of_calls_on_one_thread_and_a_burst_on_all():
    """The thread that went idle last takes the next call: one call at a time keeps to one thread (its connection
    and caches stay warm, the others stay cold); calls at once spread over every thread the busy target allows
    and all are answered."""
    from sparkcontrol.serving import ThreadPool

    pool = ThreadPool(threads=4, name="test-pool", busy_target=4)

    def where(delay: float = 0.0) -> str:
        if delay:
            threading.Event().wait(delay)
        return threading.current_thread().name

    def boom() -> None:
        raise ValueError("from the pool")

    async def main() -> tuple[list[str], list[str], int]:
        one_at_a_time = [await pool.run(where) for _ in range(30)]
        started_by_a_trickle = pool.started
        at_once = await asyncio.gather(*(pool.run(where, 0.05) for _ in range(12)))
        with pytest.raises(ValueError, match="from the pool"):
            await pool.run(boom)
        return one_at_a_time, list(at_once), started_by_a_trickle

    one_at_a_time, at_once, started_by_a_trickle = asyncio.run(main())
    assert len(set(one_at_a_time)) == 1 and started_by_a_trickle == 1  # the other threads were never started
    assert len(at_once) == 12 and len(set(at_once)) == 4


def test_a_burst_of_quick_calls_keeps_to_the_busy_target_and_blocked_calls_get_more_threads(monkeypatch):
    """Quick calls, however many at once, run on at most `busy_target` threads (each further thread would open a
    connection of its own); calls that block count as blocked after the grow delay, and the waiting calls then go
    to further threads, up to `threads`, instead of queueing behind them."""
    import time

    from sparkcontrol import serving
    from sparkcontrol.serving import ThreadPool

    quick_pool = ThreadPool(threads=8, name="test-quick", busy_target=2)
    pool = ThreadPool(threads=8, name="test-blocked", busy_target=2)

    def quick() -> str:
        sum(range(2000))
        return threading.current_thread().name

    def blocked(seconds: float) -> str:
        threading.Event().wait(seconds)
        return threading.current_thread().name

    async def main() -> tuple[set[str], set[str], float, list[str]]:
        # A grow delay no quick call reaches, however loaded the machine running the test.
        monkeypatch.setattr(serving, "POOL_GROW_AFTER_SECONDS", 2.0)
        quick_names = set(await asyncio.gather(*(quick_pool.run(quick) for _ in range(300))))
        monkeypatch.setattr(serving, "POOL_GROW_AFTER_SECONDS", 0.025)
        started = time.monotonic()
        blocked_names = set(await asyncio.gather(*(pool.run(blocked, 0.3) for _ in range(8))))
        elapsed = time.monotonic() - started
        # Two calls stuck for a long time: a quick call after them is still answered, on a third thread.
        stuck = [asyncio.ensure_future(pool.run(blocked, 1.0)) for _ in range(2)]
        await asyncio.sleep(0.1)
        answered = time.monotonic()
        beside = await pool.run(quick)
        waited = time.monotonic() - answered
        await asyncio.gather(*stuck)
        return quick_names, blocked_names, elapsed, [beside, f"{waited:.3f}"]

    quick_names, blocked_names, elapsed, (beside, waited) = asyncio.run(main())
    assert 1 <= len(quick_names) <= 2 and quick_pool.started <= 2
    # Eight calls of 0.3 s on two threads would take 1.2 s; each further thread joins after the grow delay.
    assert len(blocked_names) == 8
    assert elapsed < 0.3 + 8 * serving.POOL_GROW_AFTER_SECONDS + 0.4
    assert float(waited) < 0.5


@pytest.mark.django_db(transaction=True)
def test_a_pool_thread_left_idle_closes_its_database_connection(monkeypatch):
    """After a burst, a thread nobody needs lets go of its connection; one in steady use keeps it."""
    from django.db import connection

    from sparkcontrol import serving

    monkeypatch.setattr(serving, "POOL_IDLE_RELEASE_SECONDS", 0.3)
    pool = serving.ThreadPool(threads=1, name="test-idle")

    def query() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return connection.connection is not None

    def still_open() -> bool:
        return connection.connection is not None

    async def main() -> tuple[bool, bool, bool]:
        opened = await pool.run(query)
        kept = await pool.run(still_open)  # straight after: still open
        await asyncio.sleep(0.8)
        after_idle = await pool.run(still_open)
        return opened, kept, after_idle

    opened, kept, after_idle = asyncio.run(main())
    assert opened and kept
    assert not after_idle
