"""Request and response shapes of the scheduled-actions API (CONTRACT.md, "Scheduled actions").

Lengths, the name pattern, the cron expression, the time zone and the model/service keys are checked by the model,
so a 422 names the field either way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import ConfigDict, Field, field_validator

Kind = Literal["swap", "warm", "restart", "sweep"]
Sweep = Literal["status", "deep", "connectivity"]
WhenLocked = Literal["skip", "wait"]
Missed = Literal["run_latest", "skip"]
TEXT_FIELDS = ("name", "cron", "timezone", "model", "service")


def _printable(value: str | None) -> str | None:
    if value is not None and any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("control characters are not allowed")
    return value


class ActionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200)
    cron: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=200)
    action: Kind
    model: str | None = Field(default=None, max_length=200)
    service: str | None = Field(default=None, max_length=200)
    sweep: Sweep | None = None
    when_locked: WhenLocked = "skip"
    wait_minutes: int = Field(default=10, ge=1, le=1440)
    missed: Missed = "run_latest"
    enabled: bool = True

    _text = field_validator(*TEXT_FIELDS)(_printable)


class ActionUpdateIn(Schema):
    """PUT changes the fields given; those left out (or null) stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    cron: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=200)
    action: Kind | None = None
    model: str | None = Field(default=None, max_length=200)
    service: str | None = Field(default=None, max_length=200)
    sweep: Sweep | None = None
    when_locked: WhenLocked | None = None
    wait_minutes: int | None = Field(default=None, ge=1, le=1440)
    missed: Missed | None = None
    enabled: bool | None = None

    _text = field_validator(*TEXT_FIELDS)(_printable)


class RunOut(Schema):
    id: int
    action: str
    trigger: str
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str
    detail: str
    swap: str | None
    result: dict[str, int] | None


class ActionOut(Schema):
    name: str
    cron: str
    timezone: str
    action: str
    model: str | None
    service: str | None
    sweep: str | None
    when_locked: str
    wait_minutes: int
    missed: str
    enabled: bool
    next_run: datetime | None
    last_run: RunOut | None
    created_at: datetime
    updated_at: datetime


class RunAcceptedOut(Schema):
    run: int
