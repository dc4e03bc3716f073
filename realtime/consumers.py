"""The dashboard websocket: authenticate, subscribe to the dashboard group, forward messages. Nothing else."""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from realtime.broadcast import DASHBOARD_GROUP


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/swaps/`: every swap event, swap state, lock, schedule and probe change, for logged-in people."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        await self.accept()
        # The embedded layer can hand group messages to this socket directly (one delivery task for every socket
        # of the process instead of a wake-up of each consumer); the Redis layer cannot, and queues them.
        receiver_add = getattr(self.channel_layer, "receiver_add", None)
        if receiver_add is not None:
            receiver_add(self.channel_name, self.dashboard_message)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the consumer ends (a disconnect, an error, the server cancelling it), its receiver goes.
            receiver_discard = getattr(getattr(self, "channel_layer", None), "receiver_discard", None)
            if receiver_discard is not None:
                receiver_discard(self.channel_name)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # Channels' own also closes stale database connections, on asgiref's thread for thread-sensitive calls: a
        # thread (and a hop to it for every socket that closes) that nothing else in `serve` needs. This consumer
        # holds no group of Channels' `groups` and touches no database.
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"kind": "pong"})

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections (a hop to a thread) before every handler. No handler here
        # touches the database (the user was resolved before the consumer ran), and the hop cost twice over: with
        # 200 sockets it was a third of the loop's time per broadcast, and on its way back asgiref copies the
        # thread's context variables into this task's context, which lives as long as the socket (~3.7 KiB each).
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def dashboard_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
