"""Who is on the other end of a dashboard websocket, resolved without leaving anything behind in the socket's task.

Channels' `AuthMiddleware` loads the session and the user through `database_sync_to_async`. On its way back,
asgiref copies every context variable of the worker thread into the awaiting task's context: a fresh storage
object for each of Django's thread-local-like stores. That task is the socket's own and lives as long as the
socket, so every open dashboard kept those copies (~3.7 KiB a socket, measured with tracemalloc). Here the lookup
runs in a short-lived child task, whose context copy is dropped when it ends; the user it found is the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.auth import AuthMiddleware, get_user
from channels.sessions import CookieMiddleware, SessionMiddleware


class IsolatedAuthMiddleware(AuthMiddleware):
    """`AuthMiddleware` whose user lookup runs in a child task (see the module's docstring)."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope["user"]._wrapped = await asyncio.create_task(get_user(scope))


def dashboard_auth_stack(inner: Any) -> Any:
    """Cookies, the session and the user in the scope, as Channels' `AuthMiddlewareStack` provides them."""
    return CookieMiddleware(SessionMiddleware(IsolatedAuthMiddleware(inner)))
