"""The server's clock for the lock and the schedule registry. Clients send durations, never timestamps.

Services and selectors call `clock.now()` at call time, so a test can replace `now` to move time.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    """The current time (aware, UTC)."""
    return timezone.now()
