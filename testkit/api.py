"""The API as automation uses it, for tests and the bench: a client for one serving process, swaps started and
waited for."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

import httpx

from testkit.service import Process

TERMINAL = ("ready", "failed", "cancelled", "interrupted")


def client(server: Process, token: str | None, **kwargs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)


def swap_start(api: httpx.Client, model: str, *, force: bool = False) -> httpx.Response:
    """Ask for a swap through the API (202 when accepted)."""
    return api.post("/api/swap", json={"model": model}, params={"force": "true"} if force else None)


def swap_to(api: httpx.Client, model: str, *, timeout: float = 60, force: bool = False) -> dict:
    """Ask for a swap through the API and wait until it is terminal."""
    response = swap_start(api, model, force=force)
    assert response.status_code == 202, response.text
    return swap_wait(api, response.json()["id"], timeout=timeout)


def swap_wait(api: httpx.Client, swap_id: str, *, states: Collection[str] = TERMINAL, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    swap: dict = {}
    while time.monotonic() < deadline:
        swap = api.get(f"/api/swap/{swap_id}").json()
        if swap["state"] in states:
            return swap
        time.sleep(0.05)
    raise AssertionError(f"swap {swap_id} never reached {states}: {swap}")
