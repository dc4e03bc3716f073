"""Response shapes of the topology API."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema


class ProbeOut(Schema):
    status: str
    latency_ms: float | None
    checked_at: datetime | None
    detail: str


class EndpointOut(Schema):
    key: str
    name: str
    kind: str
    url: str
    node: str
    disabled: bool
    read_only: bool
    probe: ProbeOut
