"""The dashboard socket's consumer: what it holds while open and what it leaves when it closes."""

import channels.generic.websocket
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from realtime.broadcast import DASHBOARD_GROUP
from realtime.consumers import DashboardConsumer

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_closing_socket_leaves_the_group_without_a_hop_to_a_database_thread(monkeypatch, django_user_model):
    """Channels' disconnect closes stale database connections on asgiref's thread; this consumer touches no database,
    so a closing socket makes no such hop (and `serve` keeps no thread for it)."""
    hops: list[str] = []

    async def hop() -> None:
        hops.append("close_old_connections")

    monkeypatch.setattr(channels.generic.websocket, "aclose_old_connections", hop)
    user = await sync_to_async(django_user_model.objects.create_user)(username="u", password="pw-123-abc")
    communicator = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/ws/swaps/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    layer = get_channel_layer()
    assert len(layer.groups.get(DASHBOARD_GROUP, {})) == 1
    await communicator.disconnect(timeout=2)
    assert communicator.future.done() and not communicator.future.cancelled()  # it ended by itself
    assert DASHBOARD_GROUP not in layer.groups or not layer.groups[DASHBOARD_GROUP]
    assert hops == []
