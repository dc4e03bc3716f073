"""Channels' in-memory layer on daphne out of the box (M5's baseline).

A consumer joins one group and forwards what the group receives; `POST /emit?count=K&gap=G` starts a worker
thread that sends K messages to the group, G seconds apart, with `async_to_sync(layer.group_send)` as a task
worker of a Django project would. Each message carries the instant it was sent.

Served as `DJANGO_SETTINGS_MODULE=bench.baselines.channels_settings daphne bench.baselines.channels_site:application`.
"""

from __future__ import annotations

import threading
import time

import django
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

GROUP = "bench"

django.setup()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402


class BenchConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_message(self, event: dict) -> None:
        await self.send_json({"kind": "bench", "at": event["at"]})


def _emit(count: int, gap: float) -> None:
    layer = get_channel_layer()
    for _ in range(count):
        time.sleep(gap)
        async_to_sync(layer.group_send)(GROUP, {"type": "bench.message", "at": time.time()})


@csrf_exempt
def emit(request: HttpRequest) -> HttpResponse:
    count = int(request.GET.get("count", "10"))
    gap = float(request.GET.get("gap", "0.1"))
    threading.Thread(target=_emit, args=(count, gap), daemon=True).start()
    return HttpResponse(status=202)


urlpatterns = [path("emit", emit)]
application = ProtocolTypeRouter(
    {"http": get_asgi_application(), "websocket": URLRouter([path("ws/", BenchConsumer.as_asgi())])}
)
