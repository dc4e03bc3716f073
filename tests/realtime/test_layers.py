"""The embedded layer's group send: every member gets the message, full members are skipped, expiry still works."""

from __future__ import annotations

import asyncio

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
