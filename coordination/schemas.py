"""Request and response shapes of the lock and schedule API (CONTRACT.md, "Swap lock", "Schedule registry")."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema
from pydantic import ConfigDict, Field


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
