"""On-demand swaps (SPARKCONTROL_GATEWAY_ON_DEMAND): a request for a catalog model that is not loaded starts a
swap, unless the lock is held (423 with the holder) or another swap is active (409)."""

from __future__ import annotations

import httpx
import pytest

from testkit.api import swap_start, swap_wait
from tests.gateway.conftest import serving

pytestmark = pytest.mark.integration


def _ask(server, token: str, model: str, headers: dict | None = None) -> httpx.Response:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}", **(headers or {})}) as g:
        return g.post("/v1/chat/completions", json={"model": model, "messages": [], "max_tokens": 2}, timeout=60)


def test_a_request_for_a_catalog_model_starts_a_swap_and_is_served(deployment, on_demand, api, alpha):
    listing = httpx.get(
        f"{on_demand.url}/v1/models", headers={"Authorization": f"Bearer {deployment.tokens['inference']}"}
    ).json()
    states = {entry["id"]: entry["state"] for entry in listing["data"]}
    assert states["alpha"] == "ready" and states["beta"] == "available"
    response = _ask(on_demand, deployment.tokens["inference"], "beta")
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "beta"
    status = api.get("/api/status").json()
    assert status["serving"]["model"] == "beta"
    [latest] = api.get("/api/swaps", params={"limit": 1}).json()
    assert latest["model"] == "beta" and latest["requested_by"].startswith("gateway:token:")


def test_a_held_lock_refuses_with_its_holder_and_its_token_passes(deployment, on_demand, api, alpha):
    grant = api.post("/api/swap/lock", json={"holder": "nightly-batch", "ttl_seconds": 300})
    assert grant.status_code == 201, grant.text
    lock_token = grant.json()["token"]
    try:
        before = len(api.get("/api/swaps", params={"limit": 200}).json())
        refused = _ask(on_demand, deployment.tokens["inference"], "gamma")
        assert refused.status_code == 423, refused.text
        error = refused.json()["error"]
        assert error["code"] == "swap_lock_held" and error["holder"] == "nightly-batch"
        assert len(api.get("/api/swaps", params={"limit": 200}).json()) == before, "no swap was started"
        allowed = _ask(on_demand, deployment.tokens["inference"], "gamma", {"X-Swap-Lock-Token": lock_token})
        assert allowed.status_code == 200, allowed.text
    finally:
        api.delete("/api/swap/lock", headers={"X-Swap-Lock-Token": lock_token})
    serving(api, "alpha")


def test_another_active_swap_is_409(deployment, on_demand, api, sim, alpha):
    sim.set_load_seconds(2)
    swap_id = swap_start(api, "gamma").json()["id"]
    try:
        refused = _ask(on_demand, deployment.tokens["inference"], "beta")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "swap_in_progress"
        held = _ask(on_demand, deployment.tokens["inference"], "gamma")
        assert held.status_code == 200, "a request for the model already being swapped in is held, not refused"
    finally:
        swap_wait(api, swap_id, timeout=60)
        sim.set_load_seconds(0.5)
