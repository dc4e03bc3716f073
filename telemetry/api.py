"""Load routes: the load history of the Sparks, their vLLMs and the gateway."""

from __future__ import annotations

from datetime import UTC, datetime

from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Schema
from pydantic import Field

from accounts.auth import read_auth
from telemetry.schemas import LoadOut
from telemetry.selectors import load_series

router = Router(tags=["load"])


class LoadQuery(Schema):
    since: datetime | None = Field(
        None, description="ISO 8601 time (offset optional, UTC when absent); default: one hour ago."
    )


@router.get("/load", response=LoadOut, auth=read_auth)
def get_load(request: HttpRequest, query: Query[LoadQuery]) -> dict:
    """Load since `since`: GPU busy, memory, requests running and waiting, tokens/s per Spark; gateway figures."""
    since = query.since
    if since is not None:
        if timezone.is_naive(since):
            since = since.replace(tzinfo=UTC)
        try:
            since = since.astimezone(UTC)
        except OverflowError:  # e.g. year 1 with a positive offset: before anything kept
            since = datetime.min.replace(tzinfo=UTC)
    return {"series": load_series(since=since)}
