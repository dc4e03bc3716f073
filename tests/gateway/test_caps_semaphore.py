"""The Redis semaphore behind cross-process caps: the cap, release, and the slots of a process that died."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest
import redis

from gateway import caps
from gateway.caps import SharedCaps, SharedCapsUnavailable

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture
def shared() -> SharedCaps:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    caps_ = SharedCaps(REDIS_URL, namespace=namespace)
    yield caps_
    caps_.close()
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
    dead.close()


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
    other.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends: nothing listens there


async def test_redis_away_for_the_whole_wait_is_a_clear_refusal_naming_it_not_an_exception():
    shared = SharedCaps(f"redis://:hunter2@127.0.0.1:{_closed_port()}/13", namespace="test-away")
    started = time.monotonic()
    with pytest.raises(SharedCapsUnavailable) as refused:
        await shared.acquire(service="asr", cap=2, wait_s=0.5)
    assert 0.3 < time.monotonic() - started < 3
    message = str(refused.value)
    assert "Redis (redis://***@127.0.0.1:" in message and "did not answer within 0.5 s" in message
    assert "hunter2" not in message
    shared.close()


class LosesOneAnswer:
    """A TCP relay to Redis that delivers the first EVAL but closes the connection instead of relaying its answer:
    the client cannot tell whether it was admitted, and asks again."""

    def __init__(self) -> None:
        self.lost = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, client_reader, client_writer) -> None:  # type: ignore[no-untyped-def]
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", 6379)
        try:
            while data := await client_reader.read(65536):
                redis_writer.write(data)
                await redis_writer.drain()
                answer = await redis_reader.read(65536)
                if b"EVAL" in data and not self.lost:
                    self.lost += 1  # Redis ran the script; its answer never arrives
                    return
                client_writer.write(answer)
                await client_writer.drain()
        finally:
            client_writer.close()
            redis_writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_retry_after_a_lost_answer_does_not_take_a_second_slot(shared):
    relay = LosesOneAnswer()
    port = await relay.start()
    namespace = shared.prefix.removeprefix(caps.KEY_PREFIX).rstrip(":")
    through_relay = SharedCaps(f"redis://127.0.0.1:{port}/13", namespace=namespace)
    try:
        member = await through_relay.acquire(service="asr", cap=1, wait_s=2)
    finally:
        through_relay.close()
        await relay.close()
    assert relay.lost == 1, "the relay did not drop an answer: the test proves nothing"
    assert member is not None, "the retry was refused: the slot its lost attempt took counted against it"
    server = redis.Redis.from_url(REDIS_URL)
    assert server.zcard(f"{shared.prefix}asr") == 1
    assert await shared.acquire(service="asr", cap=1, wait_s=0) is None, "the cap of 1 admitted a second request"


async def test_a_refusal_after_a_doubtful_attempt_gives_back_the_slot_it_may_hold(shared, monkeypatch):
    """Redis ran the script but its answer was lost, and the wait ran out before a retry got through."""
    monkeypatch.setattr(caps, "RETRY_SECONDS", 5.0)  # no second attempt within the wait
    relay = LosesOneAnswer()
    port = await relay.start()
    namespace = shared.prefix.removeprefix(caps.KEY_PREFIX).rstrip(":")
    through_relay = SharedCaps(f"redis://127.0.0.1:{port}/13", namespace=namespace)
    monkeypatch.setattr(through_relay, "_client", lambda: _no_retries(f"redis://127.0.0.1:{port}/13"))
    try:
        with pytest.raises(SharedCapsUnavailable):
            await through_relay.acquire(service="asr", cap=1, wait_s=0.2)
        assert relay.lost == 1
        assert await shared.acquire(service="asr", cap=1, wait_s=2) is not None, "the doubtful slot stayed taken"
    finally:
        through_relay.close()
        await relay.close()


def _no_retries(url: str):  # type: ignore[no-untyped-def]
    """A client that reports a lost answer at once (redis-py's own retries would hide it)."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return redis.asyncio.Redis.from_url(url, socket_timeout=1.0, retry=Retry(NoBackoff(), 0))


async def test_the_gateway_answers_503_when_the_shared_cap_cannot_be_reached(settings):
    from gateway.routing import ServiceRoute
    from gateway.runtime import Gateway

    settings.REDIS_URL = f"redis://127.0.0.1:{_closed_port()}/13"
    settings.SPARKCONTROL_GATEWAY = {**settings.SPARKCONTROL_GATEWAY, "QUEUE_SECONDS": 0.3}
    gateway = Gateway()
    service = ServiceRoute(
        key="asr", kind="stt", base_url="http://127.0.0.1:9", cap=2, models=("m",), status="up", head=False
    )
    decision = await gateway.acquire(service=service, head_key=None)
    assert decision.action == "refuse" and decision.status == 503, decision
    assert decision.code == "shared_cap_unavailable" and "Redis (redis://127.0.0.1:" in decision.message
    assert gateway.service_in_flight["asr"] == 0, "the local slot it took first was not given back"
    gateway.shared_caps.close()
