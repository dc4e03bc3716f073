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
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

logger = logging.getLogger(__name__)

Receiver = Callable[[dict[str, Any]], Awaitable[None]]


class Inbox:
    """A channel's waiting messages: the part of `asyncio.Queue` the in-memory layer (and `serve`'s edge, for each
    connection's incoming messages) uses, in a fraction of its memory.

    Every open dashboard socket has a channel whose consumer waits on it for as long as the socket is open, though
    with a direct receiver nothing ever arrives there. An `asyncio.Queue` holds four deques (~3 KiB on 64-bit
    CPython) from the start; an inbox makes its deque of items and its list of waiting futures when first needed.
    """

    __slots__ = ("maxsize", "_queue", "_waiters")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._queue: deque[Any] = _NO_ITEMS  # the parent's expiry scan reads `_queue[0]` of a non-empty queue
        self._waiters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._queue)

    def put_nowait(self, item: Any) -> None:
        if self.full():
            raise asyncio.QueueFull
        if self._queue is _NO_ITEMS:
            self._queue = deque()
        self._queue.append(item)
        self._wake_one()

    def get_nowait(self) -> Any:
        if not self._queue:
            raise asyncio.QueueEmpty
        item = self._queue.popleft()
        if not self._queue:
            self._queue = _NO_ITEMS
        return item

    async def get(self) -> Any:
        while not self._queue:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                if self._queue and not waiter.cancelled():
                    self._wake_one()  # woken but leaving: the item is for the next one waiting
                raise
        return self.get_nowait()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_NO_ITEMS: deque[Any] = deque(maxlen=0)  # shared by every empty inbox; a put replaces it with a deque of its own


class SharedMessageInMemoryChannelLayer(InMemoryChannelLayer):
    """Group sends put one shared message into every member's queue (members must not mutate messages), or pass it
    to the member's direct receiver when it registered one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._receivers: dict[str, tuple[Receiver, asyncio.AbstractEventLoop]] = {}
        self._pending: dict[asyncio.AbstractEventLoop, deque[tuple[list[Receiver], dict[str, Any]]]] = {}
        self._delivering: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self._home: asyncio.AbstractEventLoop | None = None  # the loop the last group member joined from

    def receiver_add(self, channel: str, receiver: Receiver) -> None:
        """Deliver this channel's group messages by awaiting `receiver(message)` on the calling loop, not by queue."""
        self.require_valid_channel_name(channel)
        self._receivers[channel] = (receiver, asyncio.get_running_loop())

    def receiver_discard(self, channel: str) -> None:
        self._receivers.pop(channel, None)

    def _queue(self, channel: str) -> Inbox:
        """The channel's inbox, made on first use (not a new one per call, as the parent's `setdefault` builds)."""
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = Inbox(maxsize=self.get_capacity(channel))
        return queue

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        # The parent scans every channel for expired messages on every receive; `group_send` already does it once
        # per send, which is what lets a gone member's channel drop out of its groups.
        self.require_valid_channel_name(channel)
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        self._home = asyncio.get_running_loop()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self._group_send(group, message)

    def group_send_soon(self, group: str, message: dict[str, Any]) -> bool:
        """Send to `group` from any thread without waiting: the send runs on the loop the group's members joined
        from, in the order of the calls. False, sending nothing, when that loop is not running (no member joined,
        or the loop has ended); the caller then sends the ordinary way.

        `async_to_sync(group_send)` from a worker thread waits until the serving loop gets round to it: the
        swap runner spent ~5 ms a swap waiting on its own state pushes."""
        loop = self._home
        if loop is None or loop.is_closed() or not loop.is_running():
            return False
        if _running_loop() is loop:
            self._group_send(group, message)
        else:
            loop.call_soon_threadsafe(self._group_send, group, message)
        return True

    def _group_send(self, group: str, message: dict[str, Any]) -> None:
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
            queue = self._queue(channel)
            if queue.full():
                continue  # like the parent: a full member misses this message, the others still get it
            queue.put_nowait((expires, message))
        running = _running_loop()
        for loop, receivers in direct.items():
            if loop is running:
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
