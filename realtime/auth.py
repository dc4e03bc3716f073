"""Who is on the other end of a dashboard websocket: the cookies, the session and the user, put in the scope once.

Channels' `AuthMiddlewareStack` is three middlewares (cookies, session, user), and each one copies the scope and
waits on the next for as long as the socket is open: every open dashboard kept three copies of its scope, the
session middleware's wrapper and the frames (~2 KiB a socket, measured with tracemalloc). Here one middleware
makes one copy with the same three keys, found the same way (the first `Cookie` header, the session engine's
store for the session cookie, and the user as Django's `get_user` finds it).

The user lookup is a database read, run off the event loop by `run_sync` when the server gives one (`serve` gives
its HTTP pool, whose threads already hold a database connection each). Without one it runs on asgiref's own
thread for thread-sensitive calls, a thread with a database connection of its own (~0.5 MiB with SQLite's cache)
that nothing else in `serve` uses, in a short-lived child task: on its way back from that thread, asgiref copies
every context variable of the thread into the awaiting task's context; in the socket's own task, which lives as
long as the socket, those copies stayed (~3.7 KiB a socket); in a child task they go when it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.utils.crypto import constant_time_compare

RunSync = Callable[..., Awaitable[Any]]


def session_user(session: Any) -> Any:
    """The user `session` is logged in as, found as Django's `get_user` finds it (the backend it was logged in
    with, the password hash it was logged in under or a fallback secret's), or AnonymousUser.

    Unlike `get_user` it never changes the session: a websocket cannot hand the browser a new cookie, so a session
    flushed or a key cycled here would log the browser out behind its back. A session that no longer verifies
    gets no user here; the browser's next HTTP request flushes or cycles it, as Django does."""
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return AnonymousUser()
    if hasattr(user, "get_session_auth_hash"):
        given = session.get(HASH_SESSION_KEY)
        if not given:
            return AnonymousUser()
        hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
        if not any(constant_time_compare(given, expected) for expected in hashes):
            return AnonymousUser()
    return user


_session_user_on_asgiref_thread = database_sync_to_async(session_user)


class DashboardAuthMiddleware:
    """`scope["cookies"]`, `scope["session"]` and `scope["user"]` for the inner application, in one scope copy."""

    def __init__(self, inner: Any, *, run_sync: RunSync | None = None) -> None:
        self.inner = inner
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore
        self.run_sync = run_sync

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if "headers" not in scope:
            raise ValueError("DashboardAuthMiddleware was given a scope without headers")
        cookies: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies = parse_cookie(value.decode("latin1"))
                break
        session = self.session_store(cookies.get(settings.SESSION_COOKIE_NAME))
        scope = dict(scope, cookies=cookies, session=session)
        if self.run_sync is not None:
            scope["user"] = await self.run_sync(session_user, session)
        else:
            scope["user"] = await asyncio.create_task(_session_user_on_asgiref_thread(session))
        return await self.inner(scope, receive, send)


def dashboard_auth_stack(inner: Any, *, run_sync: RunSync | None = None) -> Any:
    """Cookies, the session and the user in the scope, as Channels' `AuthMiddlewareStack` provides them; the user
    lookup runs through `run_sync(fn, *args)` (awaited) when given."""
    return DashboardAuthMiddleware(inner, run_sync=run_sync)
