"""How `manage.py serve` runs Django: sync views in a pool of long-lived threads, everything else as usual.

Django's own ASGI handler gives every request a fresh thread-sensitive context: a new thread, so a new database
connection (for SQLite: connect plus the WAL and busy-timeout PRAGMAs), and a hop between the event loop and a
thread for each middleware that is not async-native. Measured here, that is ~3.5 ms of CPU for a one-query API
read, against ~0.8 ms for the same request through the sync middleware chain in a thread that keeps its
connection. So `serve` sends plain HTTP requests for sync views through the sync chain in a fixed thread pool,
one hop per request; async views (streaming proxies) and websockets keep Django's and Channels' async paths.

The sign-in pages run on a small pool of their own (`LOGIN_THREADS`): checking a password costs a deliberate
few hundred milliseconds of CPU, and a burst of wrong ones must queue there, not hold every HTTP thread while
`/api/health` and the dashboard wait behind them.
`serving_server` puts it behind daphne with the checks at the socket of `sparkcontrol.edge`.

The handler reuses private parts of Django's `ASGIHandler` (`read_body`, `create_request`, `send_response`), so it
is verified against one Django series at a time (`VERIFIED_DJANGO_SERIES`, by tests/sparkcontrol/
test_serving_conformance.py): `serve` refuses any other unless `SPARKCONTROL_FAST_HANDLER=0` (settings.FAST_HANDLER)
makes it serve through Django's own handler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response, response_for_exception
from django.db import close_old_connections, connections
from django.http import FileResponse, HttpResponseBase
from django.urls import NoReverseMatch, Resolver404, ResolverMatch, get_resolver, reverse, set_script_prefix
from django.utils.module_loading import import_string

from sparkcontrol.memory import malloc_trim_soon

logger = logging.getLogger(__name__)

# The Django series (major, minor) the handler was verified against: the conformance test passes on them.
VERIFIED_DJANGO_SERIES = frozenset({(5, 2)})
# A pool thread idle this long closes its database connections (see ThreadPool).
POOL_IDLE_RELEASE_SECONDS = 2.0
# How many pool threads take calls at once (see ThreadPool), and how long a call runs before its thread counts as
# blocked and another may take a call in its place.
POOL_BUSY_TARGET = 2
POOL_GROW_AFTER_SECONDS = 0.1
# How long a pool thread keeps its SQLite connection when the settings leave CONN_MAX_AGE at 0 (close per request).
SQLITE_CONNECTION_SECONDS = 600
# The URL names of the sign-in pages, answered from the login pool.
LOGIN_URL_NAMES = ("login", "admin:login")
# Middlewares that only check the request and set headers (no session, user, database or body): views served
# without the middleware chain (`serve_without_middleware`) still go through these, called directly on the loop.
HEADER_MIDDLEWARE = frozenset(
    {
        "django.middleware.common.CommonMiddleware",  # the host check (ALLOWED_HOSTS) and Content-Length
        "django.middleware.security.SecurityMiddleware",
        "sparkcontrol.middleware.ContentSecurityPolicyMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)
# The layers an API read with a bearer token and no cookie goes through (`PooledSyncHandler._respond_chainless`):
# the header ones, and the body limit (it answers from the declared Content-Length, before anything is read).
CHAINLESS_API_MIDDLEWARE = HEADER_MIDDLEWARE | {"sparkcontrol.middleware.BodySizeLimitMiddleware"}
# The methods served without the chain: reads, which no CSRF, session or message layer has anything to do with.
CHAINLESS_API_METHODS = frozenset({"GET", "HEAD"})


class PooledSyncHandler(ASGIHandler):
    """ASGI HTTP handler: a sync view runs with the sync middleware chain in one of `threads` long-lived threads."""

    def __init__(self, *, threads: int, async_handler: Callable[..., Any]) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.async_handler = async_handler
        self.pool = ThreadPool(threads=threads, name="http")
        self.login_pool = ThreadPool(threads=settings.LOGIN_THREADS, name="login")
        self.login_paths = _login_paths()
        self.header_layers = _header_layers()
        self.api_layers = _header_layers(CHAINLESS_API_MIDDLEWARE)
        self._innermost = convert_exception_to_response(self._get_response)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one handler per process, paths of a bounded API
    def _is_async_view(self, path: str) -> bool:
        try:
            match = get_resolver().resolve(path)
        except Resolver404:
            return False
        return iscoroutinefunction(match.func)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one handler per process, paths of a bounded API
    def _direct_match(self, path: str) -> ResolverMatch | None:
        """The match of an async view marked `serve_without_middleware` (the /v1/ gateway), else None.

        Such a view must touch the session and the user only when the request has no Authorization header."""
        try:
            match = get_resolver().resolve(path)
        except Resolver404:
            return None
        if iscoroutinefunction(match.func) and getattr(match.func, "serve_without_middleware", False):
            return match
        return None

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one handler per process, paths of a bounded API
    def _is_api_operation(self, path: str) -> bool:
        """Whether `path` is a sync django-ninja operation (an /api/ route), whose views read neither the session
        nor the user when the request carries an Authorization header (accounts.auth takes the token then)."""
        try:
            match = get_resolver().resolve(path)
        except Resolver404:
            return False
        return _is_ninja_sync_view(match.func)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        match = self._direct_match(scope["path"])
        if match is not None and any(name == b"authorization" for name, _ in scope["headers"]):
            # A bearer token: the view reads no session or user (without one it may: a signed-in person's
            # session, with its CSRF check, so the whole chain runs).
            await self._direct(match, scope, receive, send)
            return
        if self._is_async_view(scope["path"]):
            await self.async_handler(scope, receive, send)
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            if _chainless_api_request(scope) and self._is_api_operation(scope["path"]):
                response = await self.pool.run(self._respond, scope, body_file, self._respond_chainless)
            else:
                pool = self.login_pool if scope["path"] in self.login_paths else self.pool
                response = await pool.run(self._respond, scope, body_file, self.get_response)
            if not response.streaming:
                await self._send(response, send)
                return
            # A streaming body is produced, and its request finished, as Django's handler does it: in a
            # thread-sensitive context of its own, so the sync calls its iterator makes (`sync_to_async`, e.g. the
            # swap event stream's reads) and the closing `request_finished` (with the database housekeeping it
            # triggers) share one thread, rather than queue on asgiref's one shared thread, whose connection
            # nothing would ever clean up.
            async with ThreadSensitiveContext():
                try:
                    await self._send(response, send)
                finally:
                    await sync_to_async(response.close)()
        finally:
            body_file.close()

    async def _direct(self, match: ResolverMatch, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """An async view called on the loop without the middleware chain, whose sync-only layers (sessions, users,
        messages, CSRF, ...) would each cost a hop to a thread per request, and which such a view does not use when
        the request carries an Authorization header.

        Kept: the layers of `HEADER_MIDDLEWARE` (the host check, Content-Length, the security headers; called
        inline, they do no I/O), Django's conversion of an exception to a response, and the request's signals
        (`request_started`; `request_finished` from `response.close()`), and the view's end when the client goes
        away. The view's own sync calls (a token not in the cache, a swap request) run in a thread of the
        request's own, made on the first one, as under Django's handler.
        """
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        executor = _RequestThread()
        gone = _watch_disconnect(receive, asyncio.current_task())
        response = None
        try:
            set_script_prefix(get_script_prefix(scope))
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, response = self.create_request(scope, body_file)
            async with ThreadSensitiveContext(executor=executor):
                if request is not None:
                    response = await self._direct_response(match, request)
                await self._send(response, send)
        except asyncio.CancelledError:
            if not gone.done() or gone.cancelled() or not gone.result():
                raise  # not the client going away: the server is stopping
            # The client went away (Django's handler cancels the view then too): the answer's body is closed below.
        finally:
            gone.cancel()
            body_file.close()
            try:
                if response is not None and executor.used:
                    # In the thread whose database connection request_finished tidies; it runs to its end even if
                    # the wait for it is cancelled.
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.get_running_loop().run_in_executor(executor, response.close)
                elif response is not None:
                    response.close()
            finally:
                executor.shutdown(wait=False)

    async def _direct_response(self, match: ResolverMatch, request: Any) -> HttpResponseBase:
        """The layers' request hooks, the view, the layers' response hooks, as the chain calls them: a layer whose
        request hook raised is left out on the way back, one whose hook answered is not."""
        reached = 0
        response = None
        try:
            for layer in self.header_layers:
                response = layer.request(request)
                reached += 1
                if response is not None:
                    break
            if response is None:
                request.resolver_match = match
                response = await match.func(request, *match.args, **match.kwargs)
        except Exception as exc:  # noqa: BLE001 - answered as Django's handler answers it (400, 500, ...)
            response = await sync_to_async(response_for_exception, thread_sensitive=False)(request, exc)
        response._handler_class = self.__class__
        for layer in reversed(self.header_layers[:reached]):
            response = layer.response(request, response)
        return response

    async def _send(self, response: HttpResponseBase, send: Callable) -> None:
        try:
            await self.send_response(response, send)
        except asyncio.CancelledError:
            pass  # the client went away while the answer was being sent

    def _respond(
        self, scope: dict[str, Any], body_file: Any, get_response: Callable[[Any], HttpResponseBase]
    ) -> HttpResponseBase:
        """The whole sync part of a request, in a pool thread (its database connection stays with the thread);
        `get_response` is the middleware chain's (`get_response`) or `_respond_chainless`."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = get_response(request)
            response._handler_class = self.__class__
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # as Django's handler: the server does the fine chunking
        if not response.streaming:
            # The body is in memory already: finishing the request here keeps request_finished (and the
            # connection housekeeping it triggers) on the thread that served it.
            response.close()
        else:
            # The view is done with this thread's connections (the body and request_finished run elsewhere,
            # see __call__): the housekeeping request_finished would have done for them (CONN_MAX_AGE, errors).
            close_old_connections()
        return response

    def _respond_chainless(self, request: Any) -> HttpResponseBase:
        """An API read with a bearer token and no cookie, answered without the middleware chain, whose other
        layers (static files, sessions, CSRF, users, messages, sign-in lockouts) have nothing to do for it: no
        cookie to read or answer, a CSRF-exempt view, a caller named by its token. Each cost a call or two per
        request, ~10% of the CPU of such a read. The view's own handling (`_get_response`: URL resolution, the
        view middleware, exceptions to responses) is the chain's innermost part, unchanged.

        The layers of `CHAINLESS_API_MIDDLEWARE` run as the chain runs them: request hooks in order (one that
        answers ends the way in; one that raises is converted to a response and left out on the way back), then
        the response hooks in reverse (a `HybridMiddleware` that answered is left out too: its `__call__` returns
        the answer as it is), each converting its own exception as the chain's wrapper would.
        """
        reached = 0
        response = None
        try:
            for layer in self.api_layers:
                response = layer.request(request)
                if response is not None:
                    reached += not layer.hybrid  # a HybridMiddleware that answers skips its own `after`
                    break
                reached += 1
        except Exception as exc:  # noqa: BLE001 - answered as the chain's wrapper around that layer answers it
            response = response_for_exception(request, exc)
        if response is None:
            response = self._innermost(request)
        for layer in reversed(self.api_layers[:reached]):
            try:
                response = layer.response(request, response)
            except Exception as exc:  # noqa: BLE001 - as above
                response = response_for_exception(request, exc)
        return response


def _chainless_api_request(scope: dict[str, Any]) -> bool:
    """A read (GET, HEAD) with an Authorization header and no Cookie header: see `_respond_chainless`."""
    if scope["method"] not in CHAINLESS_API_METHODS or not scope["path"].startswith("/api/"):
        return False
    authorization = False
    for name, _ in scope["headers"]:
        if name == b"cookie":
            return False
        if name == b"authorization":
            authorization = True
    return authorization


def _is_ninja_sync_view(view: Callable) -> bool:
    """A view django-ninja made for a sync path operation (`PathView.get_view`); another view, or the same under a
    django-ninja that names it otherwise, is served through the chain."""
    return view.__module__ == "ninja.operation" and view.__qualname__ == "PathView.get_view.<locals>.sync_view_wrapper"


class _HeaderLayer:
    """A middleware of `HEADER_MIDDLEWARE`, called directly: its request hook (may answer early) and response hook."""

    def __init__(self, path: str) -> None:
        self.middleware = import_string(path)(_no_response)
        self.hybrid = hybrid = hasattr(self.middleware, "before")
        self._request = self.middleware.before if hybrid else getattr(self.middleware, "process_request", None)
        self._response = self.middleware.after if hybrid else getattr(self.middleware, "process_response", None)

    def request(self, request: Any) -> HttpResponseBase | None:
        return self._request(request) if self._request is not None else None

    def response(self, request: Any, response: HttpResponseBase) -> HttpResponseBase:
        return self._response(request, response) if self._response is not None else response


def _no_response(request: Any) -> HttpResponseBase:
    raise RuntimeError("a header layer never passes a request on")


def _header_layers(names: frozenset[str] = HEADER_MIDDLEWARE) -> list[_HeaderLayer]:
    """The middlewares of settings.MIDDLEWARE named in `names` (by default the header-only ones), in its order."""
    return [_HeaderLayer(path) for path in settings.MIDDLEWARE if path in names]


def _watch_disconnect(receive: Callable, task: asyncio.Task | None) -> asyncio.Task:
    """A task that cancels `task` when the client goes away; its result says whether it did."""

    async def watch() -> bool:
        message = await receive()
        if message["type"] != "http.disconnect" or task is None:
            return False
        task.cancel()
        return True

    return asyncio.ensure_future(watch())


class _RequestThread(ThreadPoolExecutor):
    """The thread of one request's sync calls: started by the first one, if any."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="direct-view")
        self.used = False

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        self.used = True
        return super().submit(fn, *args, **kwargs)


def _login_paths() -> frozenset[str]:
    paths = set()
    for name in LOGIN_URL_NAMES:
        try:
            paths.add(reverse(name))
        except NoReverseMatch:
            pass
    return frozenset(paths)


class ThreadPool:
    """Long-lived daemon threads taking calls. A call's result goes back to the caller's event loop with one
    `call_soon_threadsafe`: lighter than an executor's future chained to an asyncio one, which cost ~10% of the
    loop's time under load. Daemon threads: a view still blocked in SSH never holds the process at exit.

    The thread that went idle last takes the next call. With one queue for all, the threads took calls in turn, so
    even a trickle of requests kept every thread's SQLite connection, page cache and malloc arena in use; now a
    light load runs on the few threads it needs, and the rest stay cold until a burst needs them. A thread left
    idle for `POOL_IDLE_RELEASE_SECONDS` closes its database connections (~0.5 MiB each with SQLite's cache) and
    hands the freed memory back to the system: after a burst, only the threads that steady traffic uses keep one.
    Opening a connection again costs its next call ~1 ms.

    At most `busy_target` threads take calls at once while they keep finishing them: a burst of quick calls (API
    reads, the edge's credential checks) waits its turn on those few, which on a GIL-bound process answer as many
    per second as all of them would. Each further thread that joined a burst opened a connection of its own (~0.4
    MiB of SQLite memory: lookaside, schema, statements), and those, freed between live blocks once the burst was
    over, stayed in the process as fragments. A busy thread whose call has run for `POOL_GROW_AFTER_SECONDS`
    counts as blocked (in SSH, on a lock) and no longer against that number: while calls wait, another thread
    takes one in its place, up to `threads`, so a few slow admin pages never hold up `/api/health`.

    Threads start as calls need them (a call waits, none is idle, fewer than the target are moving), up to
    `threads`: a process that never saw more than a trickle runs two, not sixteen, each with its stack and its
    thread state. They start from the serving loop and through `sync_to_async`, as Django starts the threads of sync
    views: an `async_to_sync` call in a view (a push to dashboards) then runs on that loop, where
    the in-memory channel layer's consumers wait, instead of on a throw-away loop that never wakes them.
    """

    def __init__(self, *, threads: int, name: str, busy_target: int | None = None) -> None:
        self.threads = threads
        self.name = name
        self.busy_target = min(threads, busy_target or POOL_BUSY_TARGET)
        self.lock = threading.Lock()
        self.idle: list[queue.SimpleQueue] = []  # each idle thread's inbox; the last one in goes first
        self.backlog: collections.deque = collections.deque()  # calls waiting for a thread
        self.running: dict[int, float] = {}  # id of a busy thread's inbox -> when its call started
        self.grow_timer: asyncio.TimerHandle | None = None
        self.grow_loop: asyncio.AbstractEventLoop | None = None  # the loop of that timer
        self.started = 0  # threads started so far (they start as calls need them, up to `threads`)
        self.starting = 0  # of which not yet taking calls
        self.runners: list[asyncio.Future] = []

    def run(self, fn: Callable, *args: Any) -> asyncio.Future:
        """Run `fn(*args)` in a pool thread, in a copy of the caller's context; await the result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        call = (loop, future, contextvars.copy_context(), fn, args)
        start = None
        with self.lock:
            now = time.monotonic()
            inbox = self._take_idle(now)
            if inbox is None:
                self.backlog.append(call)
                start = self._reserve_start(now)
                if self.grow_timer is None or self.grow_loop is not loop:
                    self.grow_timer, self.grow_loop = loop.call_later(POOL_GROW_AFTER_SECONDS, self._grow), loop
        if inbox is not None:
            inbox.put(call)
        elif start is not None:
            self._start_thread(start)
        return future

    def _reserve_start(self, now: float) -> int | None:
        """The number of a thread to start for a waiting call, if none is idle, fewer than the target are moving
        and the pool is not full (the caller holds the lock)."""
        if self.idle or self.started >= self.threads or self._moving(now) + self.starting >= self.busy_target:
            return None
        self.started += 1
        self.starting += 1
        return self.started - 1

    def _start_thread(self, index: int) -> None:
        """On the loop: one more pool thread, which takes the oldest waiting call."""
        work = sync_to_async(self._work, thread_sensitive=False, executor=DaemonThreadExecutor(f"{self.name}_{index}"))
        self.runners.append(asyncio.ensure_future(work()))

    def _moving(self, now: float) -> int:
        """How many busy threads started their call within `POOL_GROW_AFTER_SECONDS` (the rest count as blocked)."""
        since = now - POOL_GROW_AFTER_SECONDS
        return sum(1 for started in self.running.values() if started > since)

    def _take_idle(self, now: float) -> queue.SimpleQueue | None:
        """An idle thread's inbox, counted busy from `now`, if one may take a call (the caller holds the lock)."""
        if not self.idle or self._moving(now) >= self.busy_target:
            return None
        inbox = self.idle.pop()
        self.running[id(inbox)] = now
        return inbox

    def _grow(self) -> None:
        """On the loop, while calls wait: idle or new threads take them in place of busy threads that are blocked."""
        self.grow_timer = None
        handed, starts = [], []
        with self.lock:
            now = time.monotonic()
            while self.backlog:
                inbox = self._take_idle(now)
                if inbox is None:
                    break
                handed.append((inbox, self.backlog.popleft()))
            while len(starts) < len(self.backlog):
                index = self._reserve_start(now)
                if index is None:
                    break
                starts.append(index)
            if self.backlog and (self.running or self.starting):
                loop = self.backlog[0][0]
                self.grow_timer, self.grow_loop = loop.call_later(POOL_GROW_AFTER_SECONDS, self._grow), loop
        for inbox, call in handed:
            inbox.put(call)
        for index in starts:
            self._start_thread(index)

    def _next_call(self, inbox: queue.SimpleQueue) -> tuple | None:
        """A waiting call for this thread, or None after putting it on the idle stack (the caller holds the lock)."""
        now = time.monotonic()
        if self.backlog and self._moving(now) < self.busy_target:
            self.running[id(inbox)] = now
            return self.backlog.popleft()
        self.idle.append(inbox)
        return None

    def _work(self) -> None:
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        with self.lock:
            self.starting -= 1
            call = self._next_call(inbox)
        while True:
            if call is None:
                try:
                    call = inbox.get(timeout=POOL_IDLE_RELEASE_SECONDS)
                except queue.Empty:
                    _release_idle_thread()
                    call = inbox.get()
            loop, future, context, fn, args = call
            try:
                outcome = (future, context.run(fn, *args), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                outcome = (future, None, exc)
            del call, future, context, fn, args
            # Back on the idle stack before the caller hears of the result: its next call comes here.
            with self.lock:
                del self.running[id(inbox)]
                call = self._next_call(inbox)
            loop.call_soon_threadsafe(_settle, *outcome)
            del outcome


def _release_idle_thread() -> None:
    """What a pool thread holds between bursts: its database connections, and the memory they freed."""
    connections.close_all()
    malloc_trim_soon()


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class DaemonThreadExecutor(Executor):
    """Runs each call in a new daemon thread: a task worker's endless loop must not hold the process at exit."""

    def __init__(self, name: str) -> None:
        self.name = name

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)

        threading.Thread(target=run, name=self.name, daemon=True).start()
        return future


class HandlerUnverified(Exception):
    """The fast handler was not verified against the installed Django; the message says how to serve anyway."""


def fast_handler_check() -> None:
    """Refuse (HandlerUnverified) a Django series `PooledSyncHandler` was not verified against."""
    series = tuple(django.VERSION[:2])
    if series in VERIFIED_DJANGO_SERIES:
        return
    verified = ", ".join(f"{major}.{minor}" for major, minor in sorted(VERIFIED_DJANGO_SERIES))
    raise HandlerUnverified(
        f"serve's fast HTTP handler (sparkcontrol/serving.py) reuses private parts of Django's ASGI handler and "
        f"was verified against Django {verified} only; this is Django {django.get_version()}. To serve now with "
        f"Django's own handler (slower, the same answers), set SPARKCONTROL_FAST_HANDLER=0. To verify this "
        f"version, run tests/sparkcontrol/test_serving_conformance.py and, if it passes, add "
        f"({series[0]}, {series[1]}) to VERIFIED_DJANGO_SERIES"
    )


def keep_database_connections() -> None:
    """Let the long-lived threads of this process keep their SQLite connection between requests and tasks.

    Only when the settings leave CONN_MAX_AGE at Django's default of 0; Postgres (DATABASE_URL) has its own value.
    """
    for alias in connections:
        config = connections.settings[alias]
        if config["ENGINE"].endswith("sqlite3") and not config.get("CONN_MAX_AGE"):
            config["CONN_MAX_AGE"] = SQLITE_CONNECTION_SECONDS


def serving_application(*, threads: int) -> Any:
    """The project's ASGI application (sparkcontrol.asgi) with `PooledSyncHandler` as its Django HTTP handler.

    The HTTP stack around the handler is rebuilt here the same way (the body limit at the ASGI edge); if asgi.py's
    stack changes, serving refuses to start rather than silently drop a layer. The websocket stack is asgi.py's,
    given the pool for its user lookups.
    """
    from channels.routing import ProtocolTypeRouter
    from django.core.exceptions import ImproperlyConfigured

    from sparkcontrol.asgi import application, django_asgi_app, websocket_application
    from sparkcontrol.bodylimit import BodyLimit

    mapping = application.application_mapping
    http = mapping["http"]
    if not (isinstance(http, BodyLimit) and http.app is django_asgi_app):
        raise ImproperlyConfigured("sparkcontrol.asgi's HTTP stack changed: update sparkcontrol.serving to match it")
    pooled = PooledSyncHandler(threads=threads, async_handler=django_asgi_app)
    pooled._is_async_view("/api/health")  # loads the URL patterns now rather than on the first request
    # A dashboard socket's user lookup runs on the pool's threads and connections too, not on a thread of its own.
    websocket = websocket_application(run_sync=pooled.pool.run)
    router = ProtocolTypeRouter({"http": BodyLimit(pooled), "websocket": websocket})
    router.edge_pool = pooled.pool  # the edge's credential checks run on the same threads and connections
    return router


def serving_server(*, threads: int, fast: bool = True, **server_options: Any) -> Any:
    """The daphne server `manage.py serve` runs, behind the edge checks (sparkcontrol.edge): `serving_application`,
    or with `fast=False` the project's ASGI application as it is (Django's own handler; the edge's credential
    checks then get a pool of their own)."""
    from sparkcontrol.edge import EdgeServer

    if not fast:
        from sparkcontrol.asgi import application as stock_application

        edge_pool = ThreadPool(threads=threads, name="edge")
        return EdgeServer(application=stock_application, edge_pool=edge_pool, **server_options)
    fast_handler_check()
    application = serving_application(threads=threads)
    return EdgeServer(application=application, edge_pool=application.edge_pool, **server_options)
