"""Reads of swaps: one swap, its events, history pages, and the cluster's current status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from swaps.models import ACTIVE_STATES, ServingState, Swap, SwapEvent, SwapState

HISTORY_MAX_LIMIT = 200


def swap_get(*, swap_id: Any) -> Swap | None:
    """One swap by id (a malformed id is simply not found)."""
    try:
        return Swap.objects.filter(pk=swap_id).first()
    except (ValueError, TypeError, Exception):  # noqa: BLE001 - a bad UUID is "not found", not an error
        return None


def swap_events(*, swap: Swap, after: int = 0, limit: int = 1000) -> QuerySet[SwapEvent]:
    """Events with seq > after, in order."""
    return SwapEvent.objects.filter(swap_id=swap.pk, seq__gt=after).order_by("seq")[:limit]


def swap_history(*, limit: int = 50, before: datetime | None = None) -> list[Swap]:
    """Newest first; `before` pages by creation time (the history index makes this flat at any size)."""
    swaps = Swap.objects.order_by("-created_at", "-id")
    if before is not None:
        swaps = swaps.filter(created_at__lt=before)
    return list(swaps[: max(1, min(limit, HISTORY_MAX_LIMIT))])


def swap_active() -> Swap | None:
    """The swap holding the slot, if any."""
    return Swap.objects.filter(active=True, state__in=ACTIVE_STATES).first()


def serving_get() -> ServingState | None:
    """What vLLM serves now, as far as swaps know."""
    return ServingState.objects.select_related("swap").filter(pk=1).first()


def swap_load_history(*, model_key: str, limit: int = 5) -> list[dict[str, float]]:
    """Per-phase load durations of the model's last successful swaps, newest first: what its next load's ETA is
    estimated from."""
    rows = (
        Swap.objects.filter(model_key=model_key, state=SwapState.READY, dry_run=False, phase_durations__isnull=False)
        .order_by("-finished_at")
        .values_list("phase_durations", flat=True)[:limit]
    )
    return [dict(row) for row in rows if isinstance(row, dict) and row]
