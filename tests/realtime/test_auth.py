"""Who is on the other end of a dashboard socket: the session's user, looked up on the pool `serve` gives, and the
session itself never changed by a socket (it cannot hand the browser a new cookie)."""

import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client, override_settings

from realtime.auth import DashboardAuthMiddleware, dashboard_auth_stack

pytestmark = pytest.mark.django_db(transaction=True)


class SeenUser:
    """An inner application that accepts the socket and remembers the scope's user."""

    def __init__(self) -> None:
        self.users: list = []

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        self.users.append(scope["user"])
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def _user_over_socket(application, session_key: str | None):  # type: ignore[no-untyped-def]
    headers = [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode())] if session_key else []
    communicator = WebsocketCommunicator(application, "/ws/swaps/", headers)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


def _signed_in(user) -> str:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def test_the_user_lookup_runs_on_the_pool_serve_gives(django_user_model):
    from sparkcontrol.serving import ThreadPool

    user = await sync_to_async(django_user_model.objects.create_user)(username="s", password="pw-123-abc")
    session_key = await sync_to_async(_signed_in)(user)
    pool = ThreadPool(threads=1, name="test-ws-auth")
    threads: list[str] = []

    def run_sync(fn, *args):  # type: ignore[no-untyped-def]
        def recorded(*inner):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return fn(*inner)

        return pool.run(recorded, *args)

    inner = SeenUser()
    await _user_over_socket(dashboard_auth_stack(inner, run_sync=run_sync), session_key)
    assert threads == ["test-ws-auth_0"]
    assert [seen.pk for seen in inner.users] == [user.pk]


async def test_serve_hands_its_pool_to_the_sockets_user_lookup():
    from sparkcontrol.serving import serving_application

    application = await sync_to_async(serving_application)(threads=1)
    origin_check = application.application_mapping["websocket"]
    auth = origin_check.application
    assert isinstance(auth, DashboardAuthMiddleware)
    assert auth.run_sync == application.edge_pool.run


@pytest.mark.parametrize("on_pool", [False, True], ids=["asgiref-thread", "pool"])
async def test_a_stale_session_gets_no_user_and_is_left_for_the_next_http_request(django_user_model, on_pool):
    from sparkcontrol.serving import ThreadPool

    run_sync = ThreadPool(threads=1, name="test-ws-stale").run if on_pool else None
    user = await sync_to_async(django_user_model.objects.create_user)(username="s", password="pw-123-abc")
    session_key = await sync_to_async(_signed_in)(user)
    user.set_password("another-pw-456")
    await sync_to_async(user.save)()

    inner = SeenUser()
    await _user_over_socket(dashboard_auth_stack(inner, run_sync=run_sync), session_key)
    assert not inner.users[0].is_authenticated
    # Not flushed: the socket could not have told the browser; the session row is still there.
    assert await sync_to_async(SessionStore().exists)(session_key)


async def test_a_session_signed_under_a_fallback_secret_keeps_its_user_and_its_key(django_user_model):
    user = await sync_to_async(django_user_model.objects.create_user)(username="s", password="pw-123-abc")
    old, new = "the-old-secret-" + "x" * 40, "the-new-secret-" + "y" * 40
    with override_settings(SECRET_KEY=old):
        session_key = await sync_to_async(_signed_in)(user)
    with override_settings(SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old]):
        inner = SeenUser()
        await _user_over_socket(dashboard_auth_stack(inner), session_key)
    assert inner.users[0].pk == user.pk
    assert await sync_to_async(SessionStore().exists)(session_key)  # not cycled: the browser's cookie still works


async def test_no_cookie_an_unknown_key_or_an_unknown_backend_get_no_user(django_user_model):
    user = await sync_to_async(django_user_model.objects.create_user)(username="s", password="pw-123-abc")
    session_key = await sync_to_async(_signed_in)(user)
    inner = SeenUser()
    application = dashboard_auth_stack(inner)
    await _user_over_socket(application, None)
    await _user_over_socket(application, "no-such-session")
    with override_settings(AUTHENTICATION_BACKENDS=["accounts.no_such.Backend"]):
        await _user_over_socket(application, session_key)
    assert [seen.is_authenticated for seen in inner.users] == [False, False, False]
