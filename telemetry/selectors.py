"""Reads of the load history: the series of `GET /api/load` and the latest figures for `/metrics`."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max
from django.utils import timezone

from telemetry.models import LOAD_SERIES, LoadResolution, LoadSample

# Points per series and node in one answer: a longer range is averaged into wider steps.
MAX_POINTS = 480
DEFAULT_RANGE = timedelta(hours=1)
HISTORY_KEPT = timedelta(days=31)


def _rows_since(*, since: datetime) -> list[dict[str, Any]]:
    """Full-resolution rows since `since`, preceded by 5-minute averages where full rows no longer exist."""
    full = list(
        LoadSample.objects.filter(resolution=LoadResolution.FULL, at__gte=since)
        .order_by("at", "node")
        .values("at", "node", *LOAD_SERIES)
    )
    averages = LoadSample.objects.filter(resolution=LoadResolution.FIVE_MINUTES, at__gte=since)
    if full:
        averages = averages.filter(at__lt=full[0]["at"])
    return list(averages.order_by("at", "node").values("at", "node", *LOAD_SERIES)) + full


def _step_for(*, since: datetime, now: datetime, rows: list[dict[str, Any]]) -> timedelta | None:
    """The averaging step that keeps every node's series within MAX_POINTS (None: no averaging needed)."""
    per_node: dict[str, int] = defaultdict(int)
    for row in rows:
        per_node[row["node"]] += 1
    if not per_node or max(per_node.values()) <= MAX_POINTS:
        return None
    span = max((now - since).total_seconds(), 1.0)
    return timedelta(seconds=math.ceil(span / MAX_POINTS))


def _averaged(rows: list[dict[str, Any]], *, step: timedelta) -> list[dict[str, Any]]:
    seconds = step.total_seconds()
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["at"].timestamp() // seconds * seconds, row["node"])].append(row)
    out = []
    for (start, node), members in sorted(groups.items()):
        averaged: dict[str, Any] = {"at": datetime.fromtimestamp(start, tz=members[0]["at"].tzinfo), "node": node}
        for name in LOAD_SERIES:
            values = [member[name] for member in members if member[name] is not None]
            averaged[name] = round(sum(values) / len(values), 3) if values else None
        out.append(averaged)
    return out


def load_series(*, since: datetime | None = None, now: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every load series since `since` (default: the last hour), as `{name: [{t, node, value}, ...]}`.

    Node rows give the per-Spark series (node = the Spark's name); the gateway's row gives the `gateway_*` series
    (node = None). Long ranges come averaged, at most MAX_POINTS points per series and node.
    """
    now = now or timezone.now()
    # Nothing older than the history kept: an earlier `since` reads (and averages over) what is there.
    since = max(since or now - DEFAULT_RANGE, now - HISTORY_KEPT)
    rows = _rows_since(since=since)
    step = _step_for(since=since, now=now, rows=rows)
    if step is not None:
        rows = _averaged(rows, step=step)
    series: dict[str, list[dict[str, Any]]] = {name: [] for name in LOAD_SERIES}
    for row in rows:
        node = row["node"] or None
        for name in LOAD_SERIES:
            value = row[name]
            if value is not None:
                series[name].append({"t": row["at"], "node": node, "value": value})
    return series


def load_latest() -> list[LoadSample]:
    """The newest full-resolution sample of each node and of the gateway (blank node), within the last hour."""
    recent = LoadSample.objects.filter(resolution=LoadResolution.FULL, at__gte=timezone.now() - DEFAULT_RANGE)
    latest = recent.aggregate(at=Max("at"))["at"]
    if latest is None:
        return []
    return list(recent.filter(at=latest).order_by("node"))
