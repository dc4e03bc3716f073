"""Request and response shapes of the lock and schedule API (CONTRACT.md, "Swap lock", "Schedule registry")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ninja import Schema
from pydantic import ConfigDict, Field, field_validator

# A day inside the calendar's ends, so the time shown in any time zone is still a date-time.
EARLIEST_NEXT_RUN = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
LATEST_NEXT_RUN = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


class LockAcquireIn(Schema):
    model_config = ConfigDict(extra="forbid")

    holder: str = Field(min_length=1, max_length=64)
    ttl_seconds: int = Field(default=900, ge=1, le=86400)


class LockGrantOut(Schema):
    token: str
    holder: str
    acquired_at: datetime
    expires_at: datetime
    epoch: int


class LockHeldOut(Schema):
    detail: str
    holder: str
    expires_at: datetime


class LockStatusOut(Schema):
    locked: bool
    holder: str | None
    acquired_at: datetime | None
    expires_at: datetime | None
    remaining_s: float
    epoch: int
    forced: bool


class ScheduleIn(Schema):
    """Lengths and the id pattern are checked by the model, so the 422 names the field either way."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    owner: str
    schedule: str
    next_run: datetime | None = None
    model: str | None = None
    description: str | None = None

    @field_validator("next_run")
    @classmethod
    def _within_the_calendar(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            # No offset means UTC (the server's time zone); an offset at the calendar's end overflows here.
            in_utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
        except OverflowError:
            in_utc = None
        if in_utc is None or not EARLIEST_NEXT_RUN <= in_utc <= LATEST_NEXT_RUN:
            raise ValueError(
                f"{value.isoformat()} is outside the dates this registry keeps "
                f"({EARLIEST_NEXT_RUN:%Y-%m-%d} to {LATEST_NEXT_RUN:%Y-%m-%d}, UTC)"
            )
        return value


class ScheduleOut(Schema):
    id: str
    name: str
    owner: str
    schedule: str
    next_run: datetime | None
    model: str | None
    description: str
    stale: bool
    created_at: datetime
    updated_at: datetime
