"""Request and response shapes of the swap API."""

from __future__ import annotations

from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field


class SwapIn(Schema):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=64)
    dry_run: bool = False


class CheckOut(Schema):
    name: str
    ok: bool
    detail: str
    warning: bool = False


class SlowOut(Schema):
    phase: str
    factor: float
    message: str


class ProgressOut(Schema):
    model_config = ConfigDict(extra="allow")

    phase: str = Field(description="starting, weights, compile, kv_cache, cuda_graphs or api_server.")
    fraction: float = Field(ge=0, le=1, description="How much of the whole load is done.")
    eta_seconds: float | None = Field(
        description="Seconds left, from the median of this model's last loads per phase; null on its first load."
    )
    label: str | None = None
    phase_fraction: float | None = Field(default=None, description="How far the current phase is, if it shows it.")
    note: str | None = Field(default=None, description='"first load of this model", or what the ETA is based on.')
    loads: int | None = Field(default=None, description="How many previous loads the ETA is based on.")
    slow: SlowOut | None = Field(default=None, description="A phase running far beyond its history (> 2x, > 30 s).")


class SwapOut(Schema):
    id: str
    model: str
    state: str
    dry_run: bool
    forced: bool
    requested_by: str
    lock_epoch: int | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    error: str | None
    commands: list[str]
    checks: list[CheckOut]
    launcher: dict[str, Any] = Field(
        default_factory=dict,
        description="The launcher's capabilities as read from the head, the node selection (--solo or -n), the "
        "container followed, and for two-node models the multi-node backend used.",
    )
    cancel_requested: bool
    progress: ProgressOut | None = Field(default=None, description="Null before loading.")


class EventOut(Schema):
    seq: int
    at: str
    kind: str
    state: str
    message: str


class ErrorOut(Schema):
    model_config = ConfigDict(extra="allow")

    detail: str


class SwapRefusedOut(Schema):
    detail: str
    active_swap: str | None = None
    holder: str | None = None
    expires_at: str | None = None


class ValidateOut(Schema):
    ok: bool
    checks: list[CheckOut]
    commands: list[str]
    launcher: dict[str, Any] = Field(default_factory=dict)


class ServingOut(Schema):
    model: str | None
    served_model_name: str | None
    since: str | None
    swap_id: str | None


class StatusOut(Schema):
    serving: ServingOut
    active_swap: SwapOut | None
    lock: dict[str, Any]
