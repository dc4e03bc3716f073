"""M7's API half: swap-history list latency before and after 10,000 swaps are in the history (rows inserted
directly), first page and a deep page."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import timedelta
from typing import Any

from bench.common import summary
from bench.net import HttpConnection, build_request

HISTORY = 10_000


def insert_history(*, model_key: str, count: int = HISTORY) -> None:
    """`count` finished swaps spread over the last 90 days, written in batches (no task, no event, no push)."""
    from django.db import transaction
    from django.utils import timezone

    from catalog.models import ModelEntry
    from swaps.models import Swap, SwapState

    model = ModelEntry.objects.get(key=model_key)
    now = timezone.now()
    rng = random.Random(11)
    created = Swap._meta.get_field("created_at")
    created.auto_now_add = False  # history rows carry their own creation time
    try:
        rows = []
        for index in range(count):
            started = now - timedelta(days=90) + timedelta(seconds=index * 90 * 86400 / count)
            failed = rng.random() < 0.1
            rows.append(
                Swap(
                    id=uuid.uuid4(),
                    model_key=model.key,
                    model=model,
                    state=SwapState.FAILED if failed else SwapState.READY,
                    requested_by="bench-history",
                    created_at=started,
                    started_at=started + timedelta(milliseconds=40),
                    finished_at=started + timedelta(seconds=rng.uniform(60, 400)),
                    error="vLLM failed while loading: torch.OutOfMemoryError" if failed else "",
                )
            )
        with transaction.atomic():
            Swap.objects.bulk_create(rows, batch_size=500)
    finally:
        created.auto_now_add = True


def middle_time() -> str:
    from swaps.models import Swap

    total = Swap.objects.count()
    created = Swap.objects.order_by("-created_at").values_list("created_at", flat=True)[total // 2]
    return created.isoformat()


async def _sequential(port: int, paths: list[str], headers: dict[str, str]) -> list[float]:
    connection = HttpConnection("127.0.0.1", port)
    samples = []
    try:
        for path in paths:
            raw = build_request("GET", path, headers=headers)
            started = time.perf_counter()
            status, _, _ = await connection.request(raw)
            samples.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status}")
    finally:
        await connection.close()
    return samples


def list_latency(port: int, *, headers: dict[str, str], requests: int, before: str | None = None) -> dict[str, Any]:
    """Sequential `GET /api/swaps?limit=50` (optionally a page `before` a time), after a few warm-up requests."""
    from urllib.parse import quote

    path = "/api/swaps?limit=50" + (f"&before={quote(before)}" if before else "")
    asyncio.run(_sequential(port, [path] * 5, headers))
    return summary(asyncio.run(_sequential(port, [path] * requests, headers)))
