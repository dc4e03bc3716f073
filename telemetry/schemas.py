"""Shapes of the load routes."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema


class LoadPointOut(Schema):
    t: datetime
    node: str | None
    value: float


class LoadOut(Schema):
    series: dict[str, list[LoadPointOut]]
