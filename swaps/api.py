"""Swap routes: request, inspect, follow (events, SSE), cancel, validate, history, status, disk delete."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.dateparse import parse_datetime
from ninja import Header, Query, Router, Schema, Status
from ninja.errors import HttpError

from accounts.auth import admin_auth, operate_auth, read_auth, require_force
from catalog.selectors import model_get
from catalog.services import DiskDeleteRefused
from cluster.services import cluster_settings_get
from coordination.selectors import lock_status
from swaps.preflight import preflight_run
from swaps.schemas import EventOut, StatusOut, SwapIn, SwapOut, ValidateOut
from swaps.secrets import swap_secrets
from swaps.selectors import serving_get, swap_active, swap_events, swap_get, swap_history
from swaps.services import (
    SwapRefused,
    event_out,
    model_disk_delete_remote,
    swap_cancel,
    swap_out,
    swap_request,
)

router = Router(tags=["swaps"])


class RefusalOut(Schema):
    """A refusal: what went wrong, naming the field."""

    detail: str


class SwapBusyOut(RefusalOut):
    """409: another swap is active."""

    active_swap: str | None


class SwapLockedOut(RefusalOut):
    """423: the swap lock is held; by whom and until when (ISO 8601)."""

    holder: str
    expires_at: str


SWAP_REFUSALS = {frozenset({403, 404, 422}): RefusalOut, 409: SwapBusyOut, 423: SwapLockedOut}


@router.post("/swap", response={202: SwapOut, **SWAP_REFUSALS}, auth=operate_auth)
def post_swap(
    request: HttpRequest,
    payload: SwapIn,
    force: bool = False,
    x_swap_lock_token: str | None = Header(default=None, alias="X-Swap-Lock-Token"),
) -> Status:
    """Start a swap (202). 404 unknown model, 409 another swap active, 423 lock held without its token."""
    if force:
        require_force(request.auth)
    try:
        swap = swap_request(
            model_key=payload.model,
            dry_run=payload.dry_run,
            actor=request.auth.name,
            lock_token=x_swap_lock_token,
            force=force,
        )
    except SwapRefused as exc:
        return Status(exc.status, {"detail": exc.detail, **exc.extra})
    return Status(202, swap_out(swap))


def _swap_or_404(swap_id: uuid.UUID):  # type: ignore[no-untyped-def]
    swap = swap_get(swap_id=swap_id)
    if swap is None:
        raise HttpError(404, f"no swap with id {swap_id}")
    return swap


@router.get("/swap/{uuid:swap_id}", response=SwapOut, auth=read_auth)
def get_swap(request: HttpRequest, swap_id: uuid.UUID) -> dict:
    """One swap."""
    return swap_out(_swap_or_404(swap_id))


@router.get("/swap/{uuid:swap_id}/events", response=list[EventOut], auth=read_auth)
def get_events(
    request: HttpRequest, swap_id: uuid.UUID, after: int = Query(0, ge=0), limit: int = Query(1000, ge=1, le=5000)
) -> list[dict]:
    """The swap's events with seq > after (the same objects the websocket and SSE send)."""
    return [event_out(event) for event in swap_events(swap=_swap_or_404(swap_id), after=after, limit=limit)]


@router.get("/swap/{uuid:swap_id}/stream", auth=read_auth, response={200: None})
def stream_events(request: HttpRequest, swap_id: uuid.UUID, after: int = Query(0, ge=0)) -> StreamingHttpResponse:
    """Server-Sent Events of the swap's events; ends after the terminal state; honours Last-Event-ID."""
    swap = _swap_or_404(swap_id)
    last_id = request.headers.get("Last-Event-ID", "").strip()
    start = int(last_id) if last_id.isdigit() else after
    response = StreamingHttpResponse(_sse(swap.pk, start), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _sse(swap_pk: uuid.UUID, after: int) -> AsyncIterator[bytes]:
    def fetch(seq: int) -> tuple[list[dict], bool]:
        swap = swap_get(swap_id=swap_pk)
        events = [event_out(event) for event in swap_events(swap=swap, after=seq, limit=500)]
        return events, swap.is_terminal

    seq = after
    yield b": stream of swap events\n\n"
    idle = 0.0
    while True:
        events, terminal = await sync_to_async(fetch)(seq)
        for event in events:
            seq = event["seq"]
            yield f"id: {seq}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n".encode()
        if terminal and not events:
            return
        if events:
            idle = 0.0
            continue
        idle += 0.1
        if idle >= 15:
            idle = 0.0
            yield b": keep-alive\n\n"
        await asyncio.sleep(0.1)


@router.post(
    "/swap/{uuid:swap_id}/cancel", response={202: SwapOut, frozenset({404, 409}): RefusalOut}, auth=operate_auth
)
def cancel_swap(request: HttpRequest, swap_id: uuid.UUID) -> Status:
    """Ask a swap to stop (202); 409 if it already ended."""
    try:
        swap = swap_cancel(swap_id=str(swap_id), actor=request.auth.name)
    except SwapRefused as exc:
        return Status(exc.status, {"detail": exc.detail, **exc.extra})
    return Status(202, swap_out(swap))


@router.post("/swap/{key}/validate", response=ValidateOut, auth=operate_auth)
def validate_swap(request: HttpRequest, key: str) -> dict:
    """The pre-flight alone for model `key`; changes nothing."""
    entry = model_get(key=key)
    if entry is None:
        raise HttpError(404, f"no catalog entry with key {key!r}")
    report = preflight_run(entry=entry, cluster=cluster_settings_get(), with_secrets=bool(swap_secrets(entry=entry)))
    return {
        "ok": report.ok,
        "checks": [check.as_dict() for check in report.checks],
        "commands": report.commands,
        "launcher": report.launcher_record(entry=entry) if report.container else {},
    }


@router.get("/swaps", response=list[SwapOut], auth=read_auth)
def list_swaps(request: HttpRequest, limit: int = Query(50, ge=1, le=200), before: str | None = None) -> list[dict]:
    """History, newest first. `before` is a swap id or an ISO 8601 time (the next page starts before it)."""
    cursor: datetime | None = None
    if before:
        earlier = swap_get(swap_id=before)
        cursor = earlier.created_at if earlier else parse_datetime(before)
        if cursor is None:
            raise HttpError(422, "before: give a swap id or an ISO 8601 date-time")
    return [swap_out(swap) for swap in swap_history(limit=limit, before=cursor)]


@router.get("/status", response=StatusOut, auth=read_auth)
def get_status(request: HttpRequest) -> dict:
    """What is served now (model, since, from which swap), the active swap, and the lock."""
    serving = serving_get()
    active = swap_active()
    return {
        "serving": {
            "model": serving.model_key or None if serving else None,
            "served_model_name": serving.served_model_name or None if serving else None,
            "since": serving.since.isoformat() if serving and serving.since and serving.model_key else None,
            "swap_id": str(serving.swap_id) if serving and serving.swap_id else None,
        },
        "active_swap": swap_out(active) if active else None,
        "lock": lock_status(),
    }


@router.delete("/models/{key}/disk", response={202: dict, frozenset({404, 409}): RefusalOut}, auth=admin_auth)
def delete_model_disk(request: HttpRequest, key: str) -> Status:
    """Delete a repo model's HF cache files on the nodes; 409 for local models and the model being served."""
    entry = model_get(key=key)
    if entry is None:
        return Status(404, {"detail": f"no catalog entry with key {key!r}"})
    try:
        outcome = model_disk_delete_remote(entry=entry, actor=request.auth.name)
    except DiskDeleteRefused as exc:
        return Status(409, {"detail": str(exc)})
    return Status(202, {"detail": outcome})
