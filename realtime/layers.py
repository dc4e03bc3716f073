"""The embedded default's channel layer: Channels' in-memory layer, with a group send that shares one message.

`InMemoryChannelLayer.group_send` deep-copies the message for every member and scans every channel for expired
messages once per member. A dashboard broadcast is one small dict holding one JSON string (see `broadcast.py`),
never mutated by a receiver, so every member's queue can hold the same object, and one expiry scan per send is
enough. Everything else (capacity, expiry, groups) is the parent's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.layers import InMemoryChannelLayer


class SharedMessageInMemoryChannelLayer(InMemoryChannelLayer):
    """Group sends put one shared message into every member's queue (members must not mutate messages)."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        expires = time.time() + self.expiry
        for channel in list(self.groups.get(group, {})):
            queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
            if queue.full():
                continue  # like the parent: a full member misses this message, the others still get it
            queue.put_nowait((expires, message))
