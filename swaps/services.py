"""Writes for swaps: request one (the gate and the single-slot rule in one transaction), move it through its
states, append events, cancel, and reap swaps whose worker died."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from audit.services import audit_record
from catalog.models import ModelEntry
from catalog.selectors import model_get
from cluster.models import Service
from realtime.broadcast import broadcast_on_commit
from swaps.models import ACTIVE_STATES, TERMINAL_STATES, EventKind, ServingState, Swap, SwapEvent, SwapState

logger = logging.getLogger(__name__)

HEAD_VLLM_SERVICE = "vllm"  # the built-in service whose model the swaps decide


class SwapRefused(Exception):
    """A swap request that cannot be accepted; `status` is the HTTP status and `extra` goes into the body."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def event_out(event: SwapEvent) -> dict[str, Any]:
    """The one shape of an event: REST, SSE and websocket all send this."""
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "state": event.state,
        "message": event.message,
    }


def swap_out(swap: Swap) -> dict[str, Any]:
    """The one shape of a swap, as `GET /api/swap/{id}` returns it."""
    return {
        "id": str(swap.id),
        "model": swap.model_key,
        "state": swap.state,
        "dry_run": swap.dry_run,
        "forced": swap.forced,
        "requested_by": swap.requested_by,
        "lock_epoch": swap.lock_epoch,
        "created_at": swap.created_at.isoformat() if swap.created_at else None,
        "started_at": swap.started_at.isoformat() if swap.started_at else None,
        "finished_at": swap.finished_at.isoformat() if swap.finished_at else None,
        "duration_s": swap.duration_s,
        "error": swap.error or None,
        "commands": list(swap.commands),
        "checks": list(swap.checks),
        "launcher": dict(swap.launcher),
        "cancel_requested": swap.cancel_requested,
        "progress": swap.progress,
    }


def _events_push(swap: Swap, events: list[SwapEvent]) -> None:
    if events:
        broadcast_on_commit(
            {"kind": "swap_events", "swap_id": str(swap.id), "events": [event_out(event) for event in events]}
        )


def _swap_push(swap: Swap) -> None:
    broadcast_on_commit({"kind": "swap", "swap": swap_out(swap)})


def swap_events_append(*, swap: Swap, items: list[tuple[str, str]], state: str | None = None) -> list[SwapEvent]:
    """Append (kind, message) events with the next sequence numbers; pushed to dashboards after commit."""
    if not items:
        return []
    # No savepoint of its own inside a caller's transaction: a failure here fails the caller's write as well.
    with transaction.atomic(savepoint=False):
        # The row lock serialises writers of one swap's events (the runner and a cancel from the API).
        Swap.objects.select_for_update().filter(pk=swap.pk).values_list("pk", flat=True).first()
        return _events_write(swap=swap, items=items, state=state)


def swap_record(*, swap: Swap, fields: list[str], items: list[tuple[str, str]]) -> None:
    """Save `fields` of the runner's `swap` and append `items` as its events, in one transaction (one commit, one
    row lock); SwapSuperseded, writing nothing, if the swap ended meanwhile."""
    with transaction.atomic():
        _lock_live(swap)
        swap.save(update_fields=fields)
        if items:
            _events_write(swap=swap, items=items)


def _events_write(*, swap: Swap, items: list[tuple[str, str]], state: str | None = None) -> list[SwapEvent]:
    """`swap_events_append` for a caller in a transaction that already holds the swap's row lock."""
    return _events_insert(swap=swap, rows=[(kind, message, state or swap.state) for kind, message in items])


def _events_insert(*, swap: Swap, rows: list[tuple[str, str, str]]) -> list[SwapEvent]:
    """(kind, message, state) rows as the swap's next events, one statement; pushed after commit."""
    last = SwapEvent.objects.filter(swap_id=swap.pk).aggregate(last=Max("seq"))["last"] or 0
    now = timezone.now()
    events = [
        SwapEvent(swap_id=swap.pk, seq=last + index, at=now, kind=kind, state=state, message=message)
        for index, (kind, message, state) in enumerate(rows, start=1)
    ]
    SwapEvent.objects.bulk_create(events)
    _events_push(swap, events)
    return events


def swap_progress_record(*, swap: Swap, progress: dict[str, Any], message: str | None = None) -> bool:
    """Store a loading swap's progress, record `message` as a progress event and push the swap to dashboards after
    commit. False, changing nothing, once the swap has ended."""
    with transaction.atomic():
        if not Swap.objects.filter(pk=swap.pk, state__in=ACTIVE_STATES).update(progress=progress):
            return False
        swap.progress = progress
        if message:
            swap_events_append(swap=swap, items=[(EventKind.PROGRESS, message)])
        _swap_push(swap)
    return True


def swap_request(
    *, model_key: str, dry_run: bool, actor: str, lock_token: str | None = None, force: bool = False
) -> Swap:
    """Accept a swap: validate, pass the lock gate and take the single swap slot in one transaction.

    The runner task is enqueued only after the transaction commits. Dry runs change nothing on the nodes,
    so they pass the gate and do not take the slot.
    """
    from coordination.services import LockHeld, lock_gate
    from swaps.tasks import swap_execute

    entry = model_get(key=model_key)
    if entry is None:
        raise SwapRefused(404, f"model: no catalog entry with key {model_key!r}")
    if not entry.enabled:
        raise SwapRefused(422, f"model: {model_key!r} is disabled in the catalog")
    try:
        with transaction.atomic():
            epoch = None
            if not dry_run:
                # THE GATE: the lock is read once, inside the transaction that creates the swap.
                try:
                    epoch = lock_gate(token=lock_token, force=force, actor=actor)
                except LockHeld as held:
                    raise SwapRefused(
                        423,
                        f"the swap lock is held by {held.holder!r} until {held.expires_at.isoformat()}; "
                        "send its token in X-Swap-Lock-Token, or force",
                        holder=held.holder,
                        expires_at=held.expires_at.isoformat(),
                    ) from None
                active = Swap.objects.filter(active=True).values_list("id", flat=True).first()
                if active is not None:
                    raise SwapRefused(409, "another swap is active", active_swap=str(active))
            swap = Swap.objects.create(
                model_key=entry.key,
                model=entry,
                dry_run=dry_run,
                forced=force and not dry_run,
                requested_by=actor,
                lock_epoch=epoch,
                active=None if dry_run else True,
            )
            _events_write(swap=swap, items=[(EventKind.STATE, "queued")])  # a row of this transaction: no lock
            if not dry_run:
                audit_record(
                    actor=actor,
                    action="swap.request",
                    target=entry.key,
                    detail={"swap": str(swap.id), "forced": force, "lock_epoch": epoch},
                )
            _swap_push(swap)
            transaction.on_commit(partial(swap_execute.enqueue, str(swap.id)))
    except IntegrityError as exc:
        # Two requests raced past the read above; the partial unique index let only one in.
        active = Swap.objects.filter(active=True).values_list("id", flat=True).first()
        raise SwapRefused(409, "another swap is active", active_swap=str(active) if active else None) from exc
    return swap


class SwapSuperseded(Exception):
    """The swap ended elsewhere (reaped as interrupted, or cancelled while queued): its runner must stop at once
    and touch nothing, because the nodes may already belong to the next swap."""


class SwapCancelled(Exception):
    """Someone asked the swap to stop: raised, with nothing written, by a step write that heeds the request."""


def _lock_live(swap: Swap, *, heed_cancel: bool = False) -> None:
    """Lock the row and make sure the swap has not ended behind the caller's back (compare-and-set); with
    `heed_cancel`, that nobody asked it to stop either. Only the state and the cancel flag are read: the row's JSON
    columns (checks, commands, progress) are the caller's already."""
    row = Swap.objects.select_for_update().filter(pk=swap.pk).values_list("state", "cancel_requested").first()
    if row is None:
        raise SwapSuperseded(f"swap {swap.id} was deleted")
    state, cancel_requested = row
    if state in TERMINAL_STATES:
        raise SwapSuperseded(f"swap {swap.id} is already {state}")
    if heed_cancel and cancel_requested:
        raise SwapCancelled()


def swap_transition(
    *,
    swap: Swap,
    state: str,
    message: str | None = None,
    items: Sequence[tuple[str, str]] = (),
    heed_cancel: bool = False,
    **fields: Any,
) -> Swap:
    """Move a swap to a new (non-terminal) state and record the state event; SwapSuperseded if it ended.

    One transaction carries what the step before found and the step after needs: `fields` are saved with the state,
    `items` ((kind, message) events, e.g. the pre-flight's checks) are written before the state's event, and with
    `heed_cancel` a requested cancel raises SwapCancelled before anything is written, so the runner needs no check of
    its own between two steps."""
    with transaction.atomic():
        _lock_live(swap, heed_cancel=heed_cancel)
        # The step's own events keep the state they belong to; the state's event comes last.
        rows = [(kind, text, swap.state) for kind, text in items] + [(EventKind.STATE, message or state, state)]
        swap.state = state
        for name, value in fields.items():
            setattr(swap, name, value)
        swap.heartbeat_at = timezone.now()
        swap.save(update_fields=["state", "heartbeat_at", *fields])
        _events_insert(swap=swap, rows=rows)
        _swap_push(swap)
    return swap


def swap_finish(
    *, swap: Swap, state: str, error: str = "", message: str | None = None, lines: Sequence[tuple[str, str]] = ()
) -> Swap:
    """Write a terminal state and release the slot; webhooks go out only after this commits. `lines`: (kind,
    message) events still to record before the terminal one, in the same write."""
    from coordination.services import webhooks_enqueue

    with transaction.atomic():
        _lock_live(swap)
        finished_at = timezone.now()
        if lines:
            _events_write(swap=swap, items=list(lines))
        swap.state = state
        swap.error = error
        swap.finished_at = finished_at
        swap.active = None
        # The runner's last progress and, once loaded, its phases' durations go in the same write.
        swap.save(update_fields=["state", "error", "finished_at", "active", "progress", "phase_durations"])
        if state == SwapState.READY and not swap.dry_run:
            entry = swap.model or ModelEntry(key=swap.model_key)
            Service.objects.filter(key=HEAD_VLLM_SERVICE).update(models_served=[entry.effective_served_name])
            ServingState.objects.update_or_create(
                pk=1,
                defaults={
                    "model_key": swap.model_key,
                    "served_model_name": entry.effective_served_name,
                    "since": swap.finished_at,
                    "swap": swap,
                },
            )
        text = message or (state if not error else f"{state}: {error}")
        _events_write(swap=swap, items=[(EventKind.STATE, text)], state=state)
        _swap_push(swap)
        if state == SwapState.READY and not swap.dry_run:
            # The vLLM tile should judge the new model now, not at the next deep sweep.
            transaction.on_commit(_probe_head_vllm)
        if not swap.dry_run and state in (SwapState.READY, SwapState.FAILED):
            event = "swap_complete" if state == SwapState.READY else "swap_failed"
            payload = webhook_swap_payload(swap)
            transaction.on_commit(lambda: webhooks_enqueue(event=event, swap=payload))
    return swap


def _probe_head_vllm() -> None:
    from cluster.tasks import probe_sweep

    for sweep in ("status", "deep"):
        probe_sweep.enqueue(sweep, [HEAD_VLLM_SERVICE])


def webhook_swap_payload(swap: Swap) -> dict[str, Any]:
    """The `swap` object of a webhook body (CONTRACT.md)."""
    return {
        "id": str(swap.id),
        "model": swap.model_key,
        "state": swap.state,
        "started_at": swap.started_at.isoformat() if swap.started_at else None,
        "finished_at": swap.finished_at.isoformat() if swap.finished_at else None,
        "duration_s": swap.duration_s,
        "error": swap.error or None,
        "requested_by": swap.requested_by,
        "lock_epoch": swap.lock_epoch,
    }


def serving_clear(*, reason: str) -> None:
    """Nothing is served any more (a swap is stopping the old model)."""
    cleared = {"model_key": "", "served_model_name": "", "since": timezone.now(), "swap": None}
    with transaction.atomic():
        Service.objects.filter(key=HEAD_VLLM_SERVICE).update(models_served=[])
        # One UPDATE: the row exists after the first swap (update_or_create read it under a lock first, every time).
        if not ServingState.objects.filter(pk=1).update(**cleared):
            ServingState.objects.update_or_create(pk=1, defaults=cleared)
    logger.info("serving cleared: %s", reason)


def swap_cancel(*, swap_id: str, actor: str) -> Swap:
    """Ask a swap to stop. A queued swap is cancelled at once; a running one at the runner's next step."""
    with transaction.atomic():
        swap = Swap.objects.select_for_update().filter(pk=swap_id).first()
        if swap is None:
            raise SwapRefused(404, f"no swap with id {swap_id}")
        if swap.is_terminal:
            raise SwapRefused(409, f"the swap is already {swap.state}")
        audit_record(actor=actor, action="swap.cancel", target=swap.model_key, detail={"swap": str(swap.id)})
        if swap.state == SwapState.QUEUED:
            swap.cancel_requested = True
            swap.save(update_fields=["cancel_requested"])
            return swap_finish(swap=swap, state=SwapState.CANCELLED, message=f"cancelled by {actor} before it started")
        swap.cancel_requested = True
        swap.save(update_fields=["cancel_requested"])
        swap_events_append(swap=swap, items=[(EventKind.PROGRESS, f"cancel requested by {actor}")])
    return swap


def swaps_reap_stale(*, now: Any = None) -> list[Swap]:
    """Mark swaps whose worker stopped beating as `interrupted` and free their slot."""
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.SPARKCONTROL.get("HEARTBEAT_STALE_SECONDS", 30))
    queued_after = timedelta(seconds=settings.SPARKCONTROL.get("QUEUED_STALE_SECONDS", 300))
    reaped = []
    for swap in Swap.objects.filter(state__in=ACTIVE_STATES):
        if swap.state == SwapState.QUEUED and swap.heartbeat_at is None:
            stale = swap.created_at < now - queued_after
            why = f"no worker started it within {int(queued_after.total_seconds())} s"
        else:
            beat = swap.heartbeat_at or swap.created_at
            stale = beat < now - stale_after
            why = f"its worker stopped responding (last heartbeat {beat.isoformat()}) during {swap.state}"
        if not stale:
            continue
        if _swap_interrupt(swap=swap, why=why):
            reaped.append(swap)
    return reaped


def swaps_reap_gone_workers(*, gone: Callable[[str], bool]) -> list[Swap]:
    """Mark running swaps whose worker is known to be gone (`gone(worker)`) as `interrupted` at once."""
    reaped = []
    for swap in Swap.objects.filter(state__in=ACTIVE_STATES).exclude(worker=""):
        if not gone(swap.worker):
            continue
        why = f"its worker ({swap.worker}) is gone (the process ended) during {swap.state}"
        if _swap_interrupt(swap=swap, why=why):
            reaped.append(swap)
    return reaped


def _swap_interrupt(*, swap: Swap, why: str) -> bool:
    """Finish a swap as interrupted unless it moved on since it was read; True when this call finished it."""
    with transaction.atomic():
        fresh = Swap.objects.select_for_update().get(pk=swap.pk)
        if fresh.state != swap.state or fresh.heartbeat_at != swap.heartbeat_at:
            return False  # it moved on while we looked
        error = f"{why}; what runs on the nodes is unknown, the next swap stops it first"
        swap_finish(swap=fresh, state=SwapState.INTERRUPTED, error=error)
    swap.state, swap.error = fresh.state, fresh.error
    return True


@dataclass
class Heartbeat:
    """Result of one heartbeat: whether someone asked the swap to stop."""

    cancel_requested: bool


def swap_heartbeat(*, swap: Swap, worker: str) -> Heartbeat:
    """Record that the runner is alive; returns the cancel flag. SwapSuperseded if the swap ended elsewhere."""
    live = Swap.objects.filter(pk=swap.pk, state__in=ACTIVE_STATES)
    if not live.update(heartbeat_at=timezone.now(), worker=worker):
        raise SwapSuperseded(f"swap {swap.id} ended while its runner was busy")
    cancel = live.values_list("cancel_requested", flat=True).first()
    return Heartbeat(cancel_requested=bool(cancel))


def model_disk_delete_remote(*, entry: ModelEntry, actor: str) -> str:
    """Remove a repo model's HF cache directory on every enabled Spark. Refused for local or served models."""
    from catalog.services import DiskDeleteRefused
    from cluster.models import SparkHost
    from cluster.services import cluster_settings_get
    from cluster.ssh import SparkConnection, SshError
    from swaps.launch import build_hf_cache_delete_command

    if entry.is_local:
        raise DiskDeleteRefused("local models are never deleted from disk")
    serving = ServingState.objects.filter(pk=1).values_list("model_key", flat=True).first()
    if serving == entry.key:
        raise DiskDeleteRefused(f"{entry.key} is being served; swap to another model first")
    if Swap.objects.filter(active=True, model_key=entry.key).exists():
        raise DiskDeleteRefused(f"a swap to {entry.key} is active")
    cluster = cluster_settings_get()
    done = []
    for host in SparkHost.objects.filter(enabled=True).order_by("name"):
        try:
            with SparkConnection(host) as connection:
                result = connection.run(build_hf_cache_delete_command(repo=entry.repo, cluster=cluster), timeout=120)
        except SshError as exc:
            raise DiskDeleteRefused(f"could not delete on {host.name}: {exc}") from exc
        if not result.ok:
            raise DiskDeleteRefused(f"delete failed on {host.name}: {result.output[-200:]}")
        done.append(host.name)
    audit_record(actor=actor, action="catalog.disk_delete", target=entry.key, detail={"nodes": done})
    return f"deleted the HF cache of {entry.repo} on {', '.join(done) or 'no node'}"
