"""The embedded default's channel layer: Channels' in-memory layer, with a group send that shares one message and
hands it straight to the consumers of this process that asked for it.

`InMemoryChannelLayer.group_send` deep-copies the message for every member and scans every channel for expired
messages once per member. A dashboard broadcast is one small dict holding one JSON string (see `broadcast.py`),
never mutated by a receiver, so every member's queue can hold the same object, and one expiry scan per send is
enough.

On the embedded default every dashboard socket lives in this one process, on the serving loop. Through a queue, a
broadcast to N sockets wakes N consumer tasks, each of which receives (the parent scans every channel for expired
messages on every receive: N² work per broadcast), dispatches and sends. A consumer may instead register a direct
receiver (`receiver_add`): group messages for its channel are then not queued but passed to that receiver by one
delivery task on the consumer's loop, in the order they were sent, one member after the other. A receiver must not
block and must not mutate the message; capacity and expiry do not apply to it (nothing waits in a queue). Scaled
out, the Redis layer has no `receiver_add` and consumers keep Channels' ordinary path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import InMemoryChannelLayer

logger = logging.getLogger(__name__)

Receiver = Callable[[dict[str, Any]], Awaitable[None]]


class SharedMessageInMemoryChannelLayer(InMemoryChannelLayer):
    """Group sends put one shared message into every member's queue (members must not mutate messages), or pass it
    to the member's direct receiver when it registered one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._receivers: dict[str, tuple[Receiver, asyncio.AbstractEventLoop]] = {}
        self._pending: dict[asyncio.AbstractEventLoop, deque[tuple[list[Receiver], dict[str, Any]]]] = {}
        self._delivering: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def receiver_add(self, channel: str, receiver: Receiver) -> None:
        """Deliver this channel's group messages by awaiting `receiver(message)` on the calling loop, not by queue."""
        self.require_valid_channel_name(channel)
        self._receivers[channel] = (receiver, asyncio.get_running_loop())

    def receiver_discard(self, channel: str) -> None:
        self._receivers.pop(channel, None)

    async def receive(self, channel: str) -> dict[str, Any]:
        # The parent scans every channel for expired messages on every receive; `group_send` already does it once
        # per send, which is what lets a gone member's channel drop out of its groups.
        self.require_valid_channel_name(channel)
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        expires = time.time() + self.expiry
        direct: dict[asyncio.AbstractEventLoop, list[Receiver]] = {}
        for channel in list(self.groups.get(group, {})):
            registered = self._receivers.get(channel)
            if registered is not None:
                direct.setdefault(registered[1], []).append(registered[0])
                continue
            queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
            if queue.full():
                continue  # like the parent: a full member misses this message, the others still get it
            queue.put_nowait((expires, message))
        for loop, receivers in direct.items():
            if loop is asyncio.get_running_loop():
                self._enqueue(loop, receivers, message)
            else:
                loop.call_soon_threadsafe(self._enqueue, loop, receivers, message)

    def _enqueue(self, loop: asyncio.AbstractEventLoop, receivers: list[Receiver], message: dict[str, Any]) -> None:
        """Queue one delivery on `loop` (called on it); one task per loop drains them in order."""
        pending = self._pending.get(loop)
        if pending is not None:
            pending.append((receivers, message))
            return
        self._pending[loop] = deque([(receivers, message)])
        task = loop.create_task(self._deliver(loop))
        self._delivering.add(task)
        task.add_done_callback(self._delivering.discard)

    async def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending[loop]
        try:
            while pending:
                receivers, message = pending.popleft()
                for receiver in receivers:
                    try:
                        await receiver(message)
                    except Exception:  # noqa: BLE001 - one socket's failure must not cost the others their message
                        logger.exception("a direct receiver failed on a %s message", message.get("type"))
        finally:
            del self._pending[loop]
