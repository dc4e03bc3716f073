"""The embedded layer's group send: every member gets the message, full members are skipped, expiry still works."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from realtime.layers import SharedMessageInMemoryChannelLayer


async def test_every_member_of_the_group_receives_the_one_message():
    layer = SharedMessageInMemoryChannelLayer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("dashboard", channel)
    await layer.group_add("other", await layer.new_channel())
    message = {"type": "dashboard.message", "text": '{"kind": "swap"}'}
    await layer.group_send("dashboard", message)
    received = [await asyncio.wait_for(layer.receive(channel), 1) for channel in channels]
    assert received == [message] * 3


async def test_a_full_member_misses_the_message_and_the_others_still_get_it():
    layer = SharedMessageInMemoryChannelLayer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("dashboard", full)
    await layer.group_add("dashboard", free)
    await layer.send(full, {"type": "dashboard.message", "text": "first"})
    await layer.group_send("dashboard", {"type": "dashboard.message", "text": "second"})
    assert (await layer.receive(full))["text"] == "first"
    assert (await layer.receive(free))["text"] == "second"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(full), 0.1)


async def test_expired_messages_drop_their_channel_from_the_group():
    layer = SharedMessageInMemoryChannelLayer(expiry=0.05)
    channel = await layer.new_channel()
    await layer.group_add("dashboard", channel)
    await layer.group_send("dashboard", {"type": "dashboard.message", "text": "stale"})
    await asyncio.sleep(0.1)
    await layer.group_send("dashboard", {"type": "dashboard.message", "text": "fresh"})
    assert channel not in layer.groups.get("dashboard", {})


async def test_a_direct_receiver_takes_group_messages_in_order_and_queued_members_still_get_theirs():
    layer = SharedMessageInMemoryChannelLayer()
    direct, queued = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("dashboard", direct)
    await layer.group_add("dashboard", queued)
    taken: list[str] = []

    async def receiver(message: dict) -> None:
        taken.append(message["text"])

    layer.receiver_add(direct, receiver)
    for text in ("one", "two", "three"):
        await layer.group_send("dashboard", {"type": "dashboard.message", "text": text})
    assert direct not in layer.channels  # nothing was queued for the direct member
    assert [(await layer.receive(queued))["text"] for _ in range(3)] == ["one", "two", "three"]
    await asyncio.sleep(0)
    assert taken == ["one", "two", "three"]


async def test_a_failing_receiver_does_not_cost_the_others_their_message():
    layer = SharedMessageInMemoryChannelLayer()
    broken, working = await layer.new_channel(), await layer.new_channel()
    taken: list[str] = []

    async def fail(message: dict) -> None:
        raise ConnectionError("gone")

    async def take(message: dict) -> None:
        taken.append(message["text"])

    for channel, receiver in ((broken, fail), (working, take)):
        await layer.group_add("dashboard", channel)
        layer.receiver_add(channel, receiver)
    await layer.group_send("dashboard", {"type": "dashboard.message", "text": "hello"})
    await asyncio.sleep(0)
    assert taken == ["hello"]


async def test_a_discarded_receiver_gets_nothing_more():
    layer = SharedMessageInMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("dashboard", channel)
    taken: list[str] = []

    async def take(message: dict) -> None:
        taken.append(message["text"])

    layer.receiver_add(channel, take)
    layer.receiver_discard(channel)
    await layer.group_discard("dashboard", channel)
    await layer.group_send("dashboard", {"type": "dashboard.message", "text": "late"})
    await asyncio.sleep(0)
    assert taken == []


@contextmanager
def member_on_a_loop_thread(layer: SharedMessageInMemoryChannelLayer, receiver) -> Iterator[threading.Thread]:
    """A dashboard member with a direct `receiver`, subscribed on a loop that then runs in a thread of its own (as the
    serving loop does beside the worker threads); the loop is running when the block starts and closed after it."""
    loop = asyncio.new_event_loop()
    running = threading.Event()

    async def subscribe() -> None:
        channel = await layer.new_channel()
        await layer.group_add("dashboard", channel)
        layer.receiver_add(channel, receiver)

    loop.run_until_complete(subscribe())
    loop.call_soon(running.set)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert running.wait(5)
        yield thread
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_send_from_another_thread_is_delivered_on_the_receivers_loop():
    layer = SharedMessageInMemoryChannelLayer()
    delivered_on: list[int] = []
    done = threading.Event()

    async def take(message: dict) -> None:
        delivered_on.append(threading.get_ident())
        done.set()

    with member_on_a_loop_thread(layer, take) as thread:
        asyncio.run(layer.group_send("dashboard", {"type": "dashboard.message", "text": "from a worker"}))
        assert done.wait(5)
        assert delivered_on == [thread.ident]


@pytest.mark.django_db(transaction=True)  # Channels closes old database connections around a consumer's handlers
async def test_a_dashboard_socket_takes_broadcasts_directly_and_its_receiver_goes_with_it():
    from types import SimpleNamespace

    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from realtime.broadcast import DASHBOARD_GROUP
    from realtime.consumers import DashboardConsumer

    layer = get_channel_layer()
    communicator = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/ws/swaps/")
    communicator.scope["user"] = SimpleNamespace(is_authenticated=True)
    connected, _ = await communicator.connect()
    assert connected
    (channel,) = layer.groups[DASHBOARD_GROUP]
    assert channel in layer._receivers
    await layer.group_send(DASHBOARD_GROUP, {"type": "dashboard.message", "text": '{"kind": "lock"}'})
    assert await communicator.receive_json_from(timeout=2) == {"kind": "lock"}
    await communicator.disconnect()
    assert channel not in layer._receivers
    assert DASHBOARD_GROUP not in layer.groups


async def test_an_inbox_hands_each_message_to_one_waiter_and_a_cancelled_waiter_loses_nothing():
    layer = SharedMessageInMemoryChannelLayer(capacity=2)
    channel = await layer.new_channel()
    waiting = [asyncio.create_task(layer.receive(channel)) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    await layer.send(channel, {"type": "t", "n": 1})
    await layer.send(channel, {"type": "t", "n": 2})
    done, pending = await asyncio.wait(waiting[1:], timeout=1)
    assert sorted(task.result()["n"] for task in done) == [1, 2] and not pending
    assert waiting[0].cancelled()
    assert channel not in layer.channels  # an emptied channel is forgotten, as the parent forgets it


async def test_an_inbox_refuses_a_message_beyond_its_capacity_and_a_woken_but_cancelled_waiter_passes_it_on():
    from channels.exceptions import ChannelFull

    layer = SharedMessageInMemoryChannelLayer(capacity=1)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "t", "n": 1})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "t", "n": 2})
    assert (await layer.receive(channel))["n"] == 1
    first, second = asyncio.create_task(layer.receive(channel)), asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)
    await layer.send(channel, {"type": "t", "n": 3})
    first.cancel()  # woken by the send, cancelled before it took the message
    assert (await asyncio.wait_for(second, 1))["n"] == 3


def test_a_worker_thread_hands_its_sends_to_the_members_loop_in_order_without_waiting_and_not_to_an_ended_loop():
    layer = SharedMessageInMemoryChannelLayer()
    assert layer.group_send_soon("dashboard", {"type": "dashboard.message", "text": "nobody"}) is False
    taken: list[str] = []
    all_in = threading.Event()

    async def take(message: dict) -> None:
        taken.append(message["text"])
        if len(taken) == 50:
            all_in.set()

    with member_on_a_loop_thread(layer, take):
        sent = [layer.group_send_soon("dashboard", {"type": "dashboard.message", "text": str(n)}) for n in range(50)]
        assert sent == [True] * 50
        assert all_in.wait(5)
        assert taken == [str(n) for n in range(50)]
    assert layer.group_send_soon("dashboard", {"type": "dashboard.message", "text": "late"}) is False
    assert taken[-1] == "49"
