"""The gateway's state in one process: routing snapshots, requests in flight, cap queues, swaps seen stopping.

Everything a request needs to be routed and admitted is here, in memory, guarded by one `threading.Lock`: the
request path makes no database query once the snapshots are loaded (auth aside). A daemon thread refreshes the
snapshots (what is served and which swap is under way every tick; services, caps and catalog about once a
second) and publishes this process's in-flight counts to the drain ledger (swaps/drain.py). The thread ticks
fast (50 ms) while a swap is active or a request is held, and every SPARKCONTROL_GATEWAY_TICK_SECONDS otherwise.

The counts are per-process state by nature (this process's own open requests). With REDIS_URL set, a cap also
holds across web processes: an admitted request then takes a slot of a Redis semaphore as well (gateway/caps.py).
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import threading
import time
import weakref
from collections import defaultdict, deque
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import DatabaseError, close_old_connections

from gateway.caps import SharedCaps, SharedCapsUnavailable
from gateway.conf import gateway_settings
from gateway.metrics import HELD, IN_FLIGHT, QUEUED
from gateway.routing import (
    STOPPING_STATES,
    Decision,
    ServiceRoute,
    SwapsSnapshot,
    Topology,
    held_outcome,
    route_decide,
    swaps_load,
    topology_load,
)
from gateway.upstream import Upstream, upstream_create
from swaps.drain import (
    LEDGER_BEAT_SECONDS,
    DrainReport,
    drain_requested,
    ledger_forget_stale,
    ledger_process_id,
    ledger_publish,
    ledger_remove,
)
from swaps.models import Swap

logger = logging.getLogger(__name__)

FAST_TICK_SECONDS = 0.05
TOPOLOGY_MAX_AGE_SECONDS = 1.0
MISS_REFRESH_AFTER_SECONDS = 0.1
CONNECTION_RECYCLE_SECONDS = 30.0
HOLD_POLL_SECONDS = 0.25
# A verified inference token is trusted for this long without a database read: a revoked token stops working
# within this many seconds on the gateway (at once on the API).


class _Waiter:
    """A request parked on a cap queue or a snapshot change; woken from any thread."""

    __slots__ = ("loop", "future", "granted")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[bool] = self.loop.create_future()
        self.granted = False

    def wake(self) -> None:
        def resolve() -> None:
            if not self.future.done():
                self.future.set_result(True)

        try:
            self.loop.call_soon_threadsafe(resolve)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more


class Lease:
    """A request's slot under its service's cap and its place in the drain count; released exactly once."""

    def __init__(self, gateway: Gateway, service: ServiceRoute, head_key: str | None) -> None:
        self.gateway = gateway
        self.service = service
        self.head_key = head_key
        self.released = False
        self.shared_member: str | None = None  # its slot of the cross-process cap, when there is one

    def release(self) -> None:
        self.gateway._release(self)

    def __del__(self) -> None:
        # A response whose body was never iterated (client gone before the first byte) still frees its slot.
        if not self.released:
            self.release()


def _refuse(status: int, code: str, message: str, retry_after: int | None = None, **extra: Any) -> Decision:
    return Decision(action="refuse", status=status, code=code, message=message, retry_after=retry_after, extra=extra)


class Gateway:
    """The gateway of this process (one instance, `gateway_runtime()`)."""

    def __init__(self) -> None:
        # Re-entrant: a Lease collected by the GC while this thread holds the lock releases itself.
        self.lock = threading.RLock()
        self.process = ledger_process_id()
        self.topology: Topology | None = None
        self.swaps: SwapsSnapshot | None = None
        self.draining: dict[str, tuple[str, float]] = {}  # stopping swap id -> (incoming model key, marked at)
        self.service_in_flight: dict[str, int] = defaultdict(int)
        self.head_in_flight: dict[str, int] = defaultdict(int)
        self.queues: dict[str, deque[_Waiter]] = defaultdict(deque)
        self.change_waiters: list[_Waiter] = []
        self.held = 0
        self.clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Upstream] = weakref.WeakKeyDictionary()
        self._shared_caps: SharedCaps | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()  # the running thread's; a new thread gets a new one
        self.goodbye_registered = False
        self.wake = threading.Event()
        self.published: tuple[dict[str, int], str | None] | None = None
        self.published_at = 0.0

    # --- snapshots -----------------------------------------------------------------------------------------------
    def refresh(self, *, full: bool = False) -> None:
        """Read the swaps (and, when due or asked, the topology) and swap the snapshots in."""
        started = time.monotonic()
        topology = None
        if full or self.topology is None or started - self.topology.loaded_at >= TOPOLOGY_MAX_AGE_SECONDS:
            topology = topology_load()
        swaps = swaps_load()
        with self.lock:
            if topology is not None:
                self.topology = topology
            self.swaps = swaps
            active = swaps.active
            for swap_id, (_, marked_at) in list(self.draining.items()):
                if marked_at < started and (active is None or active.id != swap_id):
                    del self.draining[swap_id]
            if active is not None and active.state in STOPPING_STATES:
                self.draining.setdefault(active.id, (active.model_key, started))
            if topology is not None:
                for service in topology.services.values():
                    self._grant_locked(service.key, service.cap)
            waiters, self.change_waiters = self.change_waiters, []
        for waiter in waiters:
            waiter.wake()

    def _refusing_locked(self) -> bool:
        active = self.swaps.active if self.swaps else None
        return bool(self.draining) or (active is not None and active.state in STOPPING_STATES)

    def report(self) -> DrainReport:
        """This process's counts and the stopping swap it refuses the outgoing model for."""
        with self.lock:
            seen = next(iter(self.draining), None)
            counts = {key: count for key, count in self.head_in_flight.items() if count}
        return DrainReport(process=self.process, in_flight=counts, seen_swap=seen)

    def on_drain_requested(self, *, swap_id: str | None, incoming: str, **kwargs: Any) -> DrainReport:
        """The swap runner in this process is about to stop the head vLLM: refuse from now on, report counts."""
        if swap_id is not None:
            with self.lock:
                self.draining[swap_id] = (incoming, time.monotonic())
        return self.report()

    def publish(self, *, force: bool = False) -> None:
        """Write this process's ledger row when something the drain needs changed, or to beat."""
        report = self.report()
        state = (report.in_flight, report.seen_swap)
        swap_under_way = self.swaps is not None and self.swaps.active is not None
        now = time.monotonic()
        last = self.published
        changed = last is None or state[1] != last[1] or (swap_under_way and state != last)
        if force or changed or now - self.published_at >= LEDGER_BEAT_SECONDS:
            ledger_publish(report=report)
            self.published, self.published_at = state, now

    # --- the background thread ---------------------------------------------------------------------------------
    def ensure_started(self) -> None:
        if self.thread is not None or gateway_settings().tick_s <= 0:
            return
        with self.lock:
            if self.thread is not None:
                return
            self.stopping = threading.Event()
            self.thread = threading.Thread(target=self._run, args=(self.stopping,), name="gateway-refresh", daemon=True)
        self.thread.start()
        if not self.goodbye_registered:
            atexit.register(self._goodbye)
            self.goodbye_registered = True

    def stop(self, timeout: float = 5.0) -> None:
        """End the background thread; the next request starts another. A serving process's thread lives as long as
        the process: this is for code that uses the gateway in passing (a test), so no thread outlives its use."""
        with self.lock:
            thread, self.thread = self.thread, None
            self.stopping.set()
        self.wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _fast(self) -> bool:
        return self.held > 0 or bool(self.draining) or (self.swaps is not None and self.swaps.active is not None)

    def _run(self, stopping: threading.Event) -> None:
        recycled = time.monotonic()
        failures = 0
        while not stopping.is_set():
            # Every step that touches the database is inside the guard: one failed query (a locked SQLite file, a
            # Postgres restart) must cost one tick, never the thread, or the snapshots stop where they were.
            try:
                self.refresh()
                self.publish()
                if time.monotonic() - recycled > CONNECTION_RECYCLE_SECONDS:
                    recycled = time.monotonic()
                    close_old_connections()
                    ledger_forget_stale()
                failures = 0
            except DatabaseError as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning("gateway refresh failed (%d in a row): %s", failures, exc)
                self._drop_connections()
            except Exception:  # noqa: BLE001 - the refresher must outlive any surprise
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.exception("gateway refresh crashed (%d in a row)", failures)
            if stopping.is_set():
                break
            self.wake.wait(FAST_TICK_SECONDS if self._fast() else gateway_settings().tick_s)
            self.wake.clear()

    @staticmethod
    def _drop_connections() -> None:
        """After a failed query: close what is broken, so the next tick connects afresh."""
        try:
            close_old_connections()
        except Exception:  # noqa: BLE001 - a connection that cannot even be checked is retried next tick
            logger.debug("gateway refresh: closing the database connection failed", exc_info=True)

    def _goodbye(self) -> None:
        try:
            ledger_remove(process=self.process)
        except Exception:  # noqa: BLE001 - best effort at exit; a stale row stops counting by itself
            pass

    async def ensure_fresh(self) -> None:
        """Make sure there are snapshots: loaded once here, then kept fresh by the thread (or here, without it)."""
        self.ensure_started()
        now = time.monotonic()
        if self.topology is None or self.swaps is None:
            await sync_to_async(self.refresh)(full=True)
        elif self.thread is None and (
            now - self.swaps.loaded_at >= FAST_TICK_SECONDS or now - self.topology.loaded_at >= TOPOLOGY_MAX_AGE_SECONDS
        ):
            await sync_to_async(self.refresh)()

    async def wait_change(self, timeout: float) -> None:
        """Sleep until the next snapshot refresh (or `timeout`)."""
        waiter = _Waiter()
        with self.lock:
            self.change_waiters.append(waiter)
        self.wake.set()
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            pass
        finally:
            with self.lock:
                if waiter in self.change_waiters:
                    self.change_waiters.remove(waiter)

    # --- deciding ------------------------------------------------------------------------------------------------
    def decide(self, *, model: str, default_kind: str | None) -> Decision:
        settings = gateway_settings()
        with self.lock:
            topology, swaps = self.topology, self.swaps
            draining = {swap_id: incoming for swap_id, (incoming, _) in self.draining.items()}
        assert topology is not None and swaps is not None
        return route_decide(
            model=model,
            default_kind=default_kind,
            topology=topology,
            swaps=swaps,
            draining=draining,
            on_demand=settings.on_demand,
            retry_after=settings.retry_after_s,
        )

    async def route(self, *, model: str, default_kind: str | None) -> Decision:
        """Decide, reloading the snapshots once when the name is unknown (a swap may just have finished)."""
        await self.ensure_fresh()
        decision = self.decide(model=model, default_kind=default_kind)
        if decision.action in ("refuse", "swap") and decision.status in (0, 404):
            # A catalog model that is not loaded may have a swap that started since the last tick: reread the
            # swaps (three small queries) before saying no or starting another; the topology at most twice a second.
            assert self.topology is not None
            stale = time.monotonic() - self.topology.loaded_at >= MISS_REFRESH_AFTER_SECONDS
            if stale or decision.code == "model_not_loaded" or decision.action == "swap":
                await sync_to_async(self.refresh)(full=stale)
                decision = self.decide(model=model, default_kind=default_kind)
        return decision

    async def hold(self, *, model: str, default_kind: str | None, decision: Decision) -> Decision:
        """Wait, bounded, for the model being swapped in; the decision once it is served (or why not)."""
        settings = gateway_settings()
        deadline = time.monotonic() + settings.hold_s
        swap_id = decision.swap_id
        with self.lock:
            self.held += 1
        HELD.inc()
        self.wake.set()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _refuse(
                        503,
                        "model_loading",
                        f"model {model!r} is still being swapped in after {settings.hold_s:g} s; retry later",
                        retry_after=settings.retry_after_s,
                    )
                await self.wait_change(min(remaining, HOLD_POLL_SECONDS))
                await self.ensure_fresh()
                current = self.decide(model=model, default_kind=default_kind)
                if current.action == "hold":
                    swap_id = current.swap_id
                    continue
                if current.action == "serve":
                    return current
                assert self.swaps is not None
                failed = held_outcome(swap_id=swap_id, swaps=self.swaps)
                if failed is not None:
                    return failed
                # The swap ended ready but the snapshot does not show its model served yet ("not loaded", or "swap"
                # with on-demand on): wait for the next refresh (bounded). A held request never starts a swap.
                racing = self.swaps.latest is not None and self.swaps.latest.id == swap_id
                if current.action == "refuse" and not (racing and current.code == "model_not_loaded"):
                    return current
                if not racing:
                    return _refuse(
                        503,
                        "model_unavailable",
                        f"the swap to {model!r} was replaced by another; retry later",
                        retry_after=settings.retry_after_s,
                    )
        finally:
            with self.lock:
                self.held -= 1
            HELD.dec()

    # --- admission -----------------------------------------------------------------------------------------------
    def _admit_locked(self, service: ServiceRoute, head_key: str | None, *, counted: bool) -> Lease | Decision:
        if head_key is not None and self._refusing_locked():
            if counted:
                self._release_slot_locked(service.key, service.cap)
            settings = gateway_settings()
            return _refuse(
                503, "model_swapping_out", "the model is being swapped out; retry later", settings.retry_after_s
            )
        if not counted:
            self.service_in_flight[service.key] += 1
        if head_key is not None:
            self.head_in_flight[head_key] += 1
        IN_FLIGHT.labels(service.key).inc()
        return Lease(self, service, head_key)

    def _grant_locked(self, key: str, cap: int) -> None:
        queue = self.queues.get(key)
        while queue and (cap == 0 or self.service_in_flight[key] < cap):
            waiter = queue.popleft()
            QUEUED.labels(key).dec()
            self.service_in_flight[key] += 1
            waiter.granted = True
            waiter.wake()

    def _release_slot_locked(self, key: str, cap: int) -> None:
        self.service_in_flight[key] -= 1
        topology = self.topology
        current = topology.services.get(key) if topology is not None else None
        self._grant_locked(key, current.cap if current is not None else cap)

    def _release(self, lease: Lease) -> None:
        with self.lock:
            if lease.released:
                return
            lease.released = True
            if lease.shared_member is not None and self.shared_caps is not None:
                self.shared_caps.release(lease.shared_member)
            if lease.head_key is not None:
                self.head_in_flight[lease.head_key] -= 1
                if self.head_in_flight[lease.head_key] <= 0:
                    del self.head_in_flight[lease.head_key]
            self._release_slot_locked(lease.service.key, lease.service.cap)
        IN_FLIGHT.labels(lease.service.key).dec()

    @property
    def shared_caps(self) -> SharedCaps | None:
        """The caps shared with the other web processes (Redis), or None on the embedded default."""
        url = django_settings.REDIS_URL
        if not url:
            return None
        if self._shared_caps is None or self._shared_caps.url != url:
            database = django_settings.DATABASES["default"]
            identity = "|".join(str(database.get(part, "")) for part in ("ENGINE", "HOST", "PORT", "NAME"))
            self._shared_caps = SharedCaps(url, namespace=hashlib.sha256(identity.encode()).hexdigest()[:12])
        return self._shared_caps

    async def acquire(self, *, service: ServiceRoute, head_key: str | None) -> Lease | Decision:
        """A slot under the service's cap, waiting in a bounded queue for a bounded time; 429 otherwise.

        Scaled out (REDIS_URL), a request admitted here also needs a slot of the cap shared by every web process,
        which it may wait for within what is left of the same queue wait.
        """
        if service.cap == 0 or self.shared_caps is None:
            return await self._acquire_local(service=service, head_key=head_key)
        started = time.monotonic()
        lease = await self._acquire_local(service=service, head_key=head_key)
        if not isinstance(lease, Lease):
            return lease
        settings = gateway_settings()
        left = max(0.0, settings.queue_wait_s - (time.monotonic() - started))
        try:
            member = await self.shared_caps.acquire(service=service.key, cap=service.cap, wait_s=left)
        except SharedCapsUnavailable as exc:
            lease.release()
            logger.warning("gateway: %s refused: %s", service.key, exc)
            return _refuse(
                503, "shared_cap_unavailable", str(exc), retry_after=settings.retry_after_s, service=service.key
            )
        except BaseException:
            lease.release()
            raise
        if member is None:
            lease.release()
            return _refuse(
                429,
                "too_many_requests",
                f"{service.key} stayed at its cap of {service.cap} (across all web processes) for "
                f"{settings.queue_wait_s:g} s",
                retry_after=settings.retry_after_s,
                service=service.key,
            )
        lease.shared_member = member
        return lease

    async def _acquire_local(self, *, service: ServiceRoute, head_key: str | None) -> Lease | Decision:
        settings = gateway_settings()
        with self.lock:
            queue = self.queues[service.key]
            if service.cap == 0 or (self.service_in_flight[service.key] < service.cap and not queue):
                return self._admit_locked(service, head_key, counted=False)
            if len(queue) >= settings.queue_size:
                return _refuse(
                    429,
                    "too_many_requests",
                    f"{service.key} has {service.cap} request(s) in flight and {len(queue)} waiting (the most allowed)",
                    retry_after=settings.retry_after_s,
                    service=service.key,
                )
            waiter = _Waiter()
            queue.append(waiter)
            QUEUED.labels(service.key).inc()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), settings.queue_wait_s)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            with self.lock:
                if waiter.granted:
                    self._release_slot_locked(service.key, service.cap)
                elif waiter in queue:
                    queue.remove(waiter)
                    QUEUED.labels(service.key).dec()
            raise
        with self.lock:
            if waiter.granted:
                return self._admit_locked(service, head_key, counted=True)
            if waiter in queue:
                queue.remove(waiter)
                QUEUED.labels(service.key).dec()
        return _refuse(
            429,
            "too_many_requests",
            f"{service.key} stayed at its cap of {service.cap} for {settings.queue_wait_s:g} s",
            retry_after=settings.retry_after_s,
            service=service.key,
        )

    # --- upstream ------------------------------------------------------------------------------------------------
    def client(self) -> Upstream:
        """The shared HTTP client of the running event loop (one per loop: clients cannot cross loops)."""
        loop = asyncio.get_running_loop()
        client = self.clients.get(loop)
        if client is None:
            settings = gateway_settings()
            client = upstream_create(
                kind=settings.http_client,
                connect_timeout_s=settings.connect_timeout_s,
                read_timeout_s=settings.read_timeout_s,
            )
            self.clients[loop] = client
        return client

    # --- credentials ---------------------------------------------------------------------------------------------
    # --- reading -------------------------------------------------------------------------------------------------
    def in_flight(self) -> dict[str, Any]:
        """Counts for tests and the status page: by service, by head-vLLM model key, waiting and held."""
        with self.lock:
            return {
                "services": {key: count for key, count in self.service_in_flight.items() if count},
                "head": dict(self.head_in_flight),
                "queued": {key: len(queue) for key, queue in self.queues.items() if queue},
                "held": self.held,
            }


_gateway = Gateway()


def gateway_runtime() -> Gateway:
    """This process's gateway."""
    return _gateway


def connect_drain_receiver() -> None:
    """Let a swap runner in this process ask the gateway directly (no ledger round trip)."""
    drain_requested.connect(_on_drain_requested, sender=Swap, weak=False, dispatch_uid="gateway-drain")


def _on_drain_requested(sender: Any, **kwargs: Any) -> DrainReport:
    return _gateway.on_drain_requested(**kwargs)
