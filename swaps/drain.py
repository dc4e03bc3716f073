"""Draining the gateway before a swap stops the model vLLM serves.

The gateway counts, in each process, its requests in flight to the head vLLM by model key. Stopping the container
cuts every one of them, so the runner calls `drain_wait` after the swap has entered `stopping` and before the stop
command. From the moment a gateway process sees the swap in `stopping` it refuses new requests to the outgoing
model (503 + Retry-After), so the count can only fall.

Seeing is a handshake, not a guess: a process acknowledges the swap by writing its id into its ledger row
(`GatewayLedger.seen_swap`) together with the counts it took *after* it started refusing. The wait ends when
every live process has acknowledged this swap and reports nothing in flight, or when the bounded timeout passes.
The process that runs the swap answers directly through the `drain_requested` signal (no database round trip);
other processes publish from a background thread a few times a second while a swap is active and beat every
couple of seconds otherwise, so a process that died stops counting once its heartbeat is stale. Nothing is
written to the database on the request path.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.dispatch import Signal
from django.utils import timezone

from swaps.models import EventKind, GatewayLedger, ServingState, Swap, SwapState
from swaps.services import swap_events_append

logger = logging.getLogger(__name__)

# Sent in the runner's process when a drain starts (and on every poll). A receiver marks `swap_id` as stopping,
# so its process refuses the outgoing model from now on, and returns a DrainReport of what it has in flight.
drain_requested = Signal()

LEDGER_BEAT_SECONDS = 2.0
LEDGER_STALE_SECONDS = 10.0
LEDGER_FORGET_SECONDS = 3600.0
POLL_SECONDS = 0.02
DEFAULT_DRAIN_SECONDS = 30.0


@dataclass(frozen=True)
class DrainReport:
    """What one gateway process has in flight to the head vLLM, and which stopping swap it has seen."""

    process: str
    in_flight: dict[str, int]
    seen_swap: str | None


@functools.cache
def ledger_process_id() -> str:
    """This process's name in the ledger: host, pid and a random part (pids are reused after restarts)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def drain_timeout_s() -> float:
    """How long a swap waits for the gateway to drain (settings.SPARKCONTROL["GATEWAY_DRAIN_SECONDS"])."""
    configured = getattr(settings, "SPARKCONTROL", {}).get("GATEWAY_DRAIN_SECONDS")
    return DEFAULT_DRAIN_SECONDS if configured is None else float(configured)


def ledger_publish(*, report: DrainReport) -> None:
    """Write this process's row: its counts, the stopping swap it has seen, and a fresh heartbeat."""
    GatewayLedger.objects.update_or_create(
        process=report.process,
        defaults={
            "in_flight": {key: count for key, count in report.in_flight.items() if count},
            "seen_swap": report.seen_swap,
            "beat_at": timezone.now(),
        },
    )


def ledger_remove(*, process: str) -> None:
    """Forget a process that is shutting down."""
    GatewayLedger.objects.filter(process=process).delete()


def drain_stopping_swap() -> tuple[str, str] | None:
    """The active swap that has started stopping the served model, as (id, incoming model key), if any."""
    row = (
        Swap.objects.filter(active=True, state__in=(SwapState.STOPPING, SwapState.LAUNCHING, SwapState.LOADING))
        .values_list("id", "model_key")
        .first()
    )
    return (str(row[0]), row[1]) if row else None


def _count(in_flight: dict[str, Any], model_key: str | None) -> int:
    if model_key is None:
        return sum(int(count) for count in in_flight.values())
    return int(in_flight.get(model_key, 0))


def _local_reports(*, swap_id: str | None, incoming: str, model_key: str | None) -> list[DrainReport]:
    reports = []
    for receiver, answer in drain_requested.send_robust(
        sender=Swap, swap_id=swap_id, incoming=incoming, model_key=model_key
    ):
        if isinstance(answer, DrainReport):
            reports.append(answer)
        elif isinstance(answer, Exception):
            logger.warning("drain receiver %r failed: %s", receiver, answer)
    return reports


def _pending(*, swap_id: str | None, incoming: str, model_key: str | None) -> tuple[int, int]:
    """(requests in flight to the model, live processes that have not acknowledged the swap yet)."""
    local = _local_reports(swap_id=swap_id, incoming=incoming, model_key=model_key)
    in_flight = sum(_count(report.in_flight, model_key) for report in local)
    unacknowledged = 0
    fresh_after = timezone.now() - timedelta(seconds=LEDGER_STALE_SECONDS)
    rows = GatewayLedger.objects.filter(beat_at__gte=fresh_after).exclude(process__in=[r.process for r in local])
    for counts, seen in rows.values_list("in_flight", "seen_swap"):
        in_flight += _count(counts or {}, model_key)
        if swap_id is not None and str(seen) != swap_id:
            unacknowledged += 1
    return in_flight, unacknowledged


def drain_wait(*, model_key: str | None, timeout_s: float, skip: bool, swap: Swap | None = None) -> int:
    """Wait, bounded, until no gateway process has a request in flight to the head vLLM's `model_key`.

    `model_key=None` means every request to the head vLLM (it stops as a whole). `swap`: the stopping swap, when the
    caller is its runner (otherwise it is looked up). Returns how many requests were still in flight when the wait
    ended: 0 when drained, more after the timeout or when `skip` (a forced swap) stops at once.
    """
    if swap is not None:
        swap_id, incoming = str(swap.pk), swap.model_key
    else:
        stopping = drain_stopping_swap()
        swap_id, incoming = stopping if stopping else (None, "")
    try:
        in_flight, unacknowledged = _pending(swap_id=swap_id, incoming=incoming, model_key=model_key)
    except DatabaseError as exc:
        logger.warning("drain: cannot read the gateway ledger (%s); stopping without waiting", exc)
        return 0
    if in_flight == 0 and unacknowledged == 0:
        return 0
    if model_key is None:
        served = ServingState.objects.filter(pk=1).values_list("model_key", flat=True).first()
        label = served or "the served model"
    else:
        label = model_key
    if swap is None and swap_id:
        swap = Swap.objects.filter(pk=swap_id).first()
    if skip:
        _event(swap, f"drain skipped (forced): {in_flight} gateway request(s) to {label} will be cut")
        return in_flight
    _event(
        swap,
        f"draining: waiting up to {timeout_s:g} s for {in_flight} gateway request(s) to {label} to finish"
        + (f" and {unacknowledged} gateway process(es) to acknowledge" if unacknowledged else ""),
    )
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        try:
            in_flight, unacknowledged = _pending(swap_id=swap_id, incoming=incoming, model_key=model_key)
        except DatabaseError as exc:
            logger.warning("drain: cannot read the gateway ledger: %s", exc)
            continue
        if in_flight == 0 and unacknowledged == 0:
            _event(swap, f"drained: the gateway finished its requests to {label} in {time.monotonic() - started:.2f} s")
            return 0
    _event(
        swap,
        f"drain timed out after {timeout_s:g} s: {in_flight} gateway request(s) to {label} still in flight"
        + (f", {unacknowledged} process(es) silent" if unacknowledged else "")
        + "; stopping anyway",
    )
    return in_flight


def ledger_forget_stale() -> int:
    """Delete rows of processes that have not beaten for an hour (they died without saying goodbye)."""
    cutoff = timezone.now() - timedelta(seconds=LEDGER_FORGET_SECONDS)
    return GatewayLedger.objects.filter(beat_at__lt=cutoff).delete()[0]


def _event(swap: Swap | None, message: str) -> None:
    logger.info("%s", message)
    if swap is None:
        return
    swap_events_append(swap=swap, items=[(EventKind.PROGRESS, message)])
