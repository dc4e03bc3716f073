"""Pushing messages to every open dashboard, after the transaction that produced them commits.

All dashboards subscribe to one Channels group; messages carry a `kind` (swap_event, swap, lock, schedule,
probe) and the same shape the REST API returns, so a client can always resync from the API. A message is turned
into JSON text once, here, and that text goes to every socket of the group (not one encoding per socket).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

DASHBOARD_GROUP = "dashboard"


def broadcast_now(message: dict[str, Any]) -> None:
    """Send one message to the dashboard group; a failing channel layer is logged, never raised."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        payload = {"type": "dashboard.message", "text": json.dumps(message)}
        # The embedded layer takes it without this thread waiting for the serving loop (see `group_send_soon`).
        send_soon = getattr(layer, "group_send_soon", None)
        if send_soon is None or not send_soon(DASHBOARD_GROUP, payload):
            async_to_sync(layer.group_send)(DASHBOARD_GROUP, payload)
    except Exception:  # noqa: BLE001 - a push is a copy of committed state; losing one must not fail the writer
        logger.exception("could not push a %s message to dashboards", message.get("kind"))


def broadcast_on_commit(message: dict[str, Any]) -> None:
    """Send after the current transaction commits (at once when there is none)."""
    transaction.on_commit(lambda: broadcast_now(message))
