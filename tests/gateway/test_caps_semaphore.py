"""The Redis semaphore behind cross-process caps: the cap, release, and the slots of a process that died."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis

from gateway import caps
from gateway.caps import SharedCaps

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def shared() -> SharedCaps:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    yield SharedCaps(REDIS_URL, namespace=namespace)
    server = redis.Redis.from_url(REDIS_URL)
    for key in server.scan_iter(f"{caps.KEY_PREFIX}{namespace}:*"):
        server.delete(key)


async def test_the_cap_admits_that_many_and_a_release_lets_the_next_one_in(shared):
    first = await shared.acquire(service="asr", cap=2, wait_s=0)
    second = await shared.acquire(service="asr", cap=2, wait_s=0)
    assert first and second and first != second
    assert await shared.acquire(service="asr", cap=2, wait_s=0.1) is None
    assert await shared.acquire(service="tts", cap=2, wait_s=0), "another service has its own cap"
    shared.release(first)
    third = await shared.acquire(service="asr", cap=2, wait_s=2)
    assert third is not None


async def test_slots_of_a_process_that_died_lapse_instead_of_leaking(shared, monkeypatch):
    monkeypatch.setattr(caps, "LEASE_SECONDS", 0.4)
    dead = SharedCaps(REDIS_URL, namespace=shared.prefix.removeprefix(caps.KEY_PREFIX).rstrip(":"))
    assert await dead.acquire(service="asr", cap=1, wait_s=0)
    dead._held.clear()  # the process is gone: nobody renews or releases its slot
    started = time.monotonic()
    member = await shared.acquire(service="asr", cap=1, wait_s=3)
    assert member is not None
    assert 0.2 < time.monotonic() - started < 2.5


async def test_a_live_request_is_renewed_past_its_lease(shared, monkeypatch):
    monkeypatch.setattr(caps, "LEASE_SECONDS", 0.4)
    monkeypatch.setattr(caps, "RENEW_SECONDS", 0.1)
    holder = await shared.acquire(service="asr", cap=1, wait_s=0)
    assert holder is not None
    await asyncio.sleep(1.0)  # well past the lease: only renewal keeps the slot taken
    other = SharedCaps(REDIS_URL, namespace=shared.prefix.removeprefix(caps.KEY_PREFIX).rstrip(":"))
    assert await other.acquire(service="asr", cap=1, wait_s=0.2) is None
    shared.release(holder)
    assert await other.acquire(service="asr", cap=1, wait_s=2) is not None
