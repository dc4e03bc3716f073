"""Response shapes of the topology API."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema


class ProbeOut(Schema):
    status: str
    latency_ms: float | None
    checked_at: datetime | None
    detail: str


class RestartOut(Schema):
    id: int
    service: str
    state: str
    container: str
    host: str
    requested_by: str
    requested_at: datetime
    stopping_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    downtime_s: float | None
    error: str


class EndpointOut(Schema):
    key: str
    name: str
    kind: str
    url: str
    node: str
    disabled: bool
    read_only: bool
    probe: ProbeOut
    restartable: bool = False
    container: str | None = None
    restart: RestartOut | None = None
    last_downtime_s: float | None = None
    link: str | None = None


class RestartAcceptedOut(Schema):
    id: int
    state: str


class RefusalOut(Schema):
    detail: str


class ServiceErrorOut(Schema):
    at: datetime
    sweep: str
    status: str
    detail: str


class ServiceHistoryOut(Schema):
    """A service's status samples as columns (t: Unix seconds), its last errors, deep health and restarts."""

    service: str
    since: datetime
    t: list[float]
    status: list[str]
    latency_ms: list[float | None]
    errors: list[ServiceErrorOut]
    deep: ProbeOut | None
    restarts: list[RestartOut]
