"""Events reach dashboards over the websocket and over SSE, in the REST shape, resumable by sequence."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import AsyncClient

from realtime.broadcast import broadcast_now
from realtime.consumers import DashboardConsumer
from swaps.models import SwapState
from swaps.services import swap_events_append, swap_finish, swap_request

pytestmark = pytest.mark.django_db(transaction=True)


async def _connect(user):  # type: ignore[no-untyped-def]
    communicator = WebsocketCommunicator(DashboardConsumer.as_asgi(), "/ws/swaps/")
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_anonymous_sockets_are_refused():
    communicator, connected, code = await _connect(AnonymousUser())
    assert not connected and code == 4401


async def test_swap_events_reach_the_socket_after_commit(django_user_model, model_factory):
    user = await sync_to_async(django_user_model.objects.create_user)(username="u", password="pw-123-abc")
    await sync_to_async(model_factory)("tiny", repo="sim/tiny-model")
    communicator, connected, _ = await _connect(user)
    assert connected
    swap = await sync_to_async(swap_request)(model_key="tiny", dry_run=True, actor="u")
    messages = [await communicator.receive_json_from(timeout=2) for _ in range(2)]
    kinds = {message["kind"] for message in messages}
    assert kinds == {"swap_events", "swap"}
    events = next(m for m in messages if m["kind"] == "swap_events")
    assert events["swap_id"] == str(swap.id)
    assert events["events"] == [
        {"seq": 1, "at": events["events"][0]["at"], "kind": "state", "state": "queued", "message": "queued"}
    ]
    await sync_to_async(broadcast_now)({"kind": "lock", "locked": True})
    assert (await communicator.receive_json_from(timeout=2))["kind"] == "lock"
    await communicator.disconnect()


async def test_sse_stream_sends_every_event_then_ends_and_resumes(django_user_model, model_factory):
    user = await sync_to_async(django_user_model.objects.create_superuser)(username="s", password="pw-123-abc")
    await sync_to_async(model_factory)("tiny", repo="sim/tiny-model")
    swap = await sync_to_async(swap_request)(model_key="tiny", dry_run=False, actor="s")
    await sync_to_async(swap_events_append)(swap=swap, items=[("log", "line a"), ("log", "line b")])
    await sync_to_async(swap_finish)(swap=swap, state=SwapState.READY)
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)

    async def read(headers: dict) -> list[dict]:
        response = await client.get(f"/api/swap/{swap.id}/stream", headers=headers)
        assert response["Content-Type"] == "text/event-stream"
        body = b""
        async for chunk in response.streaming_content:
            body += chunk
        frames = [f for f in body.decode().split("\n\n") if f.startswith("id:")]
        return [json.loads(f.split("data: ", 1)[1]) for f in frames]

    everything = await asyncio.wait_for(read({}), timeout=10)
    assert [e["seq"] for e in everything] == [1, 2, 3, 4]
    assert everything[-1]["state"] == "ready"
    resumed = await asyncio.wait_for(read({"Last-Event-ID": "2"}), timeout=10)
    assert [e["seq"] for e in resumed] == [3, 4]


async def _connect_with_cookie(cookie: str | None):  # type: ignore[no-untyped-def]
    from realtime.auth import dashboard_auth_stack

    headers = [(b"origin", b"http://testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(dashboard_auth_stack(DashboardConsumer.as_asgi()), "/ws/swaps/", headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_the_socket_knows_a_signed_in_session_and_refuses_a_missing_unknown_or_stale_one(django_user_model):
    """The dashboard's sign-in check: the session cookie's user is in the scope; no cookie, an unknown session key,
    and a session whose password hash no longer matches (the password changed since) are all refused."""
    from django.conf import settings
    from django.test import Client

    user = await sync_to_async(django_user_model.objects.create_user)(username="s", password="pw-123-abc")
    client = Client()
    await sync_to_async(client.force_login)(user)
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value

    signed_in = f"csrftoken=x; {settings.SESSION_COOKIE_NAME}={session_key}"
    communicator, connected, _ = await _connect_with_cookie(signed_in)
    assert connected
    await communicator.disconnect()

    for cookie in (None, "csrftoken=x", f"{settings.SESSION_COOKIE_NAME}=no-such-session"):
        communicator, connected, code = await _connect_with_cookie(cookie)
        assert not connected and code == 4401, cookie

    user.set_password("another-pw-456")
    await sync_to_async(user.save)()
    communicator, connected, code = await _connect_with_cookie(f"{settings.SESSION_COOKIE_NAME}={session_key}")
    assert not connected and code == 4401
