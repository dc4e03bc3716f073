"""The loading swap's progress as the runner follows vLLM's log: stored on the swap, pushed to dashboards and recorded
as `progress` events, throttled (every phase change at once; the fraction at most every PROGRESS_MIN_SECONDS)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError

from swaps.models import Swap
from swaps.progress import HISTORY_LOADS, LoadProgress, progress_message
from swaps.selectors import swap_load_history
from swaps.services import swap_progress_record

logger = logging.getLogger(__name__)

PROGRESS_MIN_SECONDS = 0.5  # at most ~2 updates a second between phase changes ...
PROGRESS_MIN_STEP = 0.01  # ... and only when the bar moved a percent (or the estimate by ETA_MIN_STEP seconds)
ETA_MIN_STEP = 10.0


class ProgressFeed:
    """One swap's load: fed the head node's log lines, it keeps the swap's `progress` current."""

    def __init__(self, *, swap: Swap, clock: Callable[[], float] = time.monotonic) -> None:
        self.swap = swap
        self.clock = clock
        now = clock()
        self.load = LoadProgress(history=swap_load_history(model_key=swap.model_key, limit=HISTORY_LOADS), started=now)
        self.sent: dict[str, Any] | None = None
        self.sent_at = now
        self._send(self.load.snapshot(now), now)

    def line(self, text: str, *, before_send: Callable[[], None] | None = None) -> None:
        """A line of the head node's container log; `before_send` runs before a progress update is recorded."""
        now = self.clock()
        if self.load.feed(text, now):
            self._maybe_send(now, before_send)

    def tick(self) -> None:
        """Time passed: the estimate moves, and a phase may now run far beyond its history."""
        if not self.load.finished:
            self._maybe_send(self.clock())

    def ready(self) -> None:
        """vLLM serves the model: the load is complete, and its phases' durations are kept for the next ETA. Both
        are written by the swap's finish, in the same write that makes it ready (nothing here delays that)."""
        now = self.clock()
        self.load.finish(now)
        self.sent, self.sent_at = self.load.snapshot(now), now
        self.swap.progress = self.sent
        self.swap.phase_durations = self.load.phase_durations()

    def _maybe_send(self, now: float, before_send: Callable[[], None] | None = None) -> None:
        progress = self.load.snapshot(now)
        sent = self.sent or {}
        changed = progress["phase"] != sent.get("phase") or bool(progress["slow"]) != bool(sent.get("slow"))
        if not changed and now - self.sent_at >= PROGRESS_MIN_SECONDS:
            moved = progress["fraction"] - sent.get("fraction", 0.0) >= PROGRESS_MIN_STEP
            eta, eta_sent = progress["eta_seconds"], sent.get("eta_seconds")
            estimate = eta is not None and eta_sent is not None and abs(eta - eta_sent) >= ETA_MIN_STEP
            slower = bool(progress["slow"]) and round(progress["slow"]["factor"]) != round(sent["slow"]["factor"])
            changed = moved or estimate or slower
        if changed:
            if before_send is not None:
                before_send()
            self._send(progress, now)

    def _send(self, progress: dict[str, Any], now: float) -> None:
        self.sent, self.sent_at = progress, now
        try:
            swap_progress_record(swap=self.swap, progress=progress, message=progress_message(progress))
        except DatabaseError:
            # Progress is a view of the load, never a reason to fail it.
            logger.exception("swap %s: could not record its progress", self.swap.id)
