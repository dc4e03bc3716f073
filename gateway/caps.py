"""Per-service caps that hold across web processes: a counting semaphore in Redis, used when REDIS_URL is set.

Each admitted request holds a member of a sorted set per deployment and service
(`sparkcontrol:gateway:cap:<deployment>:<service>`, the deployment being a digest of the database settings, so two
installations sharing a Redis do not share caps), scored
by when it lapses on Redis's own clock. Admission is one Lua script: drop lapsed members, then add this one if
fewer than the cap remain. A process that dies mid-request cannot leak a slot for longer than LEASE_SECONDS:
the members of live requests are renewed every RENEW_SECONDS by a thread of this process, which also removes
the members of finished requests (a release never blocks the request path or the event loop).

The local cap of `gateway.runtime` still applies first, so one process never holds more than the cap either. A
request that finds the shared cap full keeps its local place and asks Redis again every POLL_SECONDS until its
queue wait runs out; across processes the waiters are not served in arrival order.

Redis not answering (a timeout, a refused connection, a restart) is retried the same way within that wait, and
only when it outlasts the wait does the request get a clear refusal (`SharedCapsUnavailable`), never a bare 500.
A retry after a timeout cannot take a second slot: the script admits a member it already holds at once, and a
member whose admission was in doubt when the wait ran out is removed, so no slot is left held by nobody.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from typing import Any

from coordination.webhooks import webhook_url_redacted

logger = logging.getLogger(__name__)

KEY_PREFIX = "sparkcontrol:gateway:cap:"
LEASE_SECONDS = 30.0
RENEW_SECONDS = 10.0
POLL_SECONDS = 0.02
RETRY_SECONDS = 0.1  # between attempts while Redis does not answer

# KEYS[1] the service's set; ARGV: cap, member, lease seconds. Returns 1 when admitted (or already holding a slot:
# the retry of an attempt whose answer was lost).
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], t + tonumber(ARGV[3]), ARGV[2])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) * 2)
  return 1
end
return 0
"""

# KEYS: sets; ARGV: lease seconds, then one member per key. Renews members still present (never re-adds one).
_RENEW = """
local now = redis.call('TIME')
local until_ = tonumber(now[1]) + tonumber(now[2]) / 1000000 + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', until_, ARGV[i + 1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[1])) * 2)
end
return 0
"""


class SharedCapsUnavailable(Exception):
    """Redis did not answer for the whole of a request's queue wait; the message names the last error."""


class SharedCaps:
    """The cross-process side of the caps: acquire on the request's loop, release and renew on a thread."""

    def __init__(self, url: str, *, namespace: str = "") -> None:
        # Imported here, not with the module: redis (~6 MiB of a serving process) is loaded only where caps are shared.
        from redis.exceptions import RedisError

        self.url = url
        # Redis's own errors (timeouts and lost connections included) and the OS's for a refused or reset socket.
        self.errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self.prefix = f"{KEY_PREFIX}{namespace}:" if namespace else KEY_PREFIX
        self._async_clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._held: dict[str, str] = {}  # member -> key, for renewal
        self._lock = threading.Lock()
        self._releases: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    # --- on the request's event loop -------------------------------------------------------------------------
    def _client(self) -> Any:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = redis.asyncio.Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._async_clients[loop] = client
        return client

    async def acquire(self, *, service: str, cap: int, wait_s: float) -> str | None:
        """A member of the service's set within `wait_s` seconds, or None when the cap stayed full."""
        self._start()
        member = uuid.uuid4().hex
        key = self.prefix + service
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        client = self._client()
        failure: BaseException | None = None
        while True:
            try:
                admitted = await client.eval(_ACQUIRE, 1, key, cap, member, LEASE_SECONDS)
            except self.errors as exc:
                admitted, failure = 0, exc
            else:
                failure = None
            if admitted:
                with self._lock:
                    self._held[member] = key
                return member
            pause = POLL_SECONDS if failure is None else RETRY_SECONDS
            if loop.time() + pause > deadline:
                if failure is None:
                    return None
                self._start()
                self._releases.put((key, member))  # in case an unanswered attempt did take a slot
                raise SharedCapsUnavailable(
                    f"Redis ({webhook_url_redacted(self.url)}), which holds the caps shared by the web processes, "
                    f"did not answer within {wait_s:g} s: {_described(failure)}"
                ) from failure
            await asyncio.sleep(pause)

    # --- from any thread -------------------------------------------------------------------------------------
    def release(self, member: str) -> None:
        """Give the slot back (done by this process's cap thread, at once)."""
        with self._lock:
            key = self._held.pop(member, None)
        if key is not None:
            self._releases.put((key, member))

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gateway-shared-caps", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        renew = client.register_script(_RENEW)
        while not self._closed.is_set():
            try:
                item = self._releases.get(timeout=RENEW_SECONDS)
            except queue.Empty:
                item = None
            if self._closed.is_set():
                break
            try:
                if item is not None:
                    pipe = client.pipeline(transaction=False)
                    pipe.zrem(*item)
                    while True:  # everything released meanwhile, in one round trip
                        try:
                            more = self._releases.get_nowait()
                        except queue.Empty:
                            break
                        if more is None:
                            break
                        pipe.zrem(*more)
                    pipe.execute()
                    continue
                with self._lock:
                    held = list(self._held.items())
                if held:
                    renew(keys=[key for _, key in held], args=[LEASE_SECONDS, *[member for member, _ in held]])
            except self.errors as exc:  # Redis away: its members lapse on their own after LEASE_SECONDS
                logger.warning(
                    "could not release or renew the gateway's shared cap slots in Redis: %s", _described(exc)
                )
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                logger.exception("could not release or renew the gateway's shared cap slots in Redis")

    def close(self) -> None:
        """End the cap thread (its slots lapse on their own); for code that uses the caps in passing, as tests do."""
        self._closed.set()
        self._releases.put(None)
        if self._thread is not None:
            self._thread.join(5)

    def held_count(self) -> int:
        with self._lock:
            return len(self._held)


def _described(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
