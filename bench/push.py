"""M5: push latency, from an event written by the worker to its arrival on N open dashboard websockets, and the
baseline: Channels' in-memory layer on daphne out of the box, pushing from a worker thread the same way.

The events are real: dry-run swaps of the two-node model (the worker writes the pre-flight state, the checks and
the end state; each `swap_events` message carries the instant its events were written, `at`). The `queued` event is
left out: the API request writes it, not the worker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import summary
from bench.net import HttpConnection, WebSocketClient, build_request


async def _open(port: int, path: str, count: int, headers: dict[str, str]) -> list[WebSocketClient]:
    sockets: list[WebSocketClient] = []
    gate = asyncio.Semaphore(16)

    async def one() -> None:
        async with gate:
            client = WebSocketClient(port, path, headers=headers)
            await client.connect()
            sockets.append(client)

    await asyncio.gather(*(one() for _ in range(count)))
    return sockets


async def _close(sockets: list[WebSocketClient], tasks: list[asyncio.Task]) -> None:
    for client in sockets:
        await client.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _at(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def _ours(
    port: int, *, cookie: str, token: str, model: str, sockets: int, dry_runs: int, on_open: Callable[[], None]
) -> dict[str, Any]:
    latencies: list[float] = []
    ready: dict[str, asyncio.Event] = {}
    counts = {"messages": 0}

    def make_handler(first: bool) -> Callable[[float, str], None]:
        def handle(received: float, text: str) -> None:
            message = json.loads(text)
            kind = message.get("kind")
            if kind == "swap_events":
                events = [e for e in message["events"] if not (e["kind"] == "state" and e["message"] == "queued")]
                if events:
                    latencies.append((received - _at(events[0]["at"])) * 1000)
                    counts["messages"] += 1
            elif kind == "swap" and first and message["swap"]["state"] in ("ready", "failed"):
                ready.setdefault(message["swap"]["id"], asyncio.Event()).set()

        return handle

    clients = await _open(port, "/ws/swaps/", sockets, {"Cookie": cookie})
    tasks = [asyncio.create_task(client.read_forever(make_handler(index == 0))) for index, client in enumerate(clients)]
    try:
        await asyncio.sleep(0.5)
        on_open()
        connection = HttpConnection("127.0.0.1", port)
        request = build_request(
            "POST", "/api/swap", headers={"Authorization": f"Bearer {token}"}, body={"model": model, "dry_run": True}
        )
        for _ in range(dry_runs):
            status, _, body = await connection.request(request)
            if status != 202:
                raise RuntimeError(f"dry run refused: {status} {body[:200]!r}")
            swap_id = json.loads(body)["id"]
            await asyncio.wait_for(ready.setdefault(swap_id, asyncio.Event()).wait(), 60)
            await asyncio.sleep(0.3)  # the last message reaches every socket
        await connection.close()
        closed = sum(client.closed.is_set() for client in clients)
    finally:
        await _close(clients, tasks)
    return {"latency_ms": summary(latencies), "messages": counts["messages"], "closed_early": closed}


def run_ours(
    port: int, *, cookie: str, token: str, model: str, sockets: int, dry_runs: int, on_open: Callable[[], None]
) -> dict[str, Any]:
    return asyncio.run(
        _ours(port, cookie=cookie, token=token, model=model, sockets=sockets, dry_runs=dry_runs, on_open=on_open)
    )


async def _baseline(port: int, *, sockets: int, messages: int) -> dict[str, Any]:
    latencies: list[float] = []

    def handle(received: float, text: str) -> None:
        message = json.loads(text)
        if message.get("kind") == "bench":
            latencies.append((received - message["at"]) * 1000)

    clients = await _open(port, "/ws/", sockets, {})
    tasks = [asyncio.create_task(client.read_forever(handle)) for client in clients]
    try:
        await asyncio.sleep(0.5)
        connection = HttpConnection("127.0.0.1", port)
        await connection.request(build_request("POST", f"/emit?count={messages}&gap=0.1"))
        await connection.close()
        deadline = time.monotonic() + messages * 0.1 + 10
        while len(latencies) < messages * sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
    finally:
        await _close(clients, tasks)
    return {"latency_ms": summary(latencies), "messages": len(latencies) // max(sockets, 1)}


def run_baseline(*, log_dir: Path, sizes: list[int], messages: int) -> dict[str, Any]:
    from bench.api import start_asgi

    child, port = start_asgi(
        "channels-daphne",
        "bench.baselines.channels_site:application",
        server="daphne",
        log_dir=log_dir,
        settings="bench.baselines.channels_settings",
    )
    try:
        return {str(size): asyncio.run(_baseline(port, sockets=size, messages=messages)) for size in sizes}
    finally:
        child.stop()
