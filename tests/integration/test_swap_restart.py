"""A worker killed mid-swap: after a restart the swap is `interrupted`, and the next swap works."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from testkit.service import Service

pytestmark = pytest.mark.integration


def wait_state(client: httpx.Client, swap_id: str, states: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        swap = client.get(f"/api/swap/{swap_id}").json()
        if swap["state"] in states:
            return swap
        time.sleep(0.1)
    raise AssertionError(f"swap never reached {states}: {swap}")


def test_killed_worker_leaves_an_interrupted_swap_and_the_next_swap_works(sim, tmp_path):
    env = {
        "SPARKCONTROL_HEARTBEAT_STALE_SECONDS": "3",
        "SPARKCONTROL_ADMIN_PASSWORD": "pw-restart-123",
        "LOCAL_MODEL_ROOTS": f"{sim.root}/models",
    }
    with Service(tmp_path, data_dir=tmp_path, env=env) as service:
        service.on_stop(sim.stop_containers)
        service.manage("migrate", "--no-input", "-v0")
        service.manage("sparksim_register", "--root", sim.root)
        (tmp_path / "models.yaml").write_text("models:\n  - key: slow\n    repo: sim/tiny-model\n")
        service.manage("catalog", "import", str(tmp_path / "models.yaml"))
        token = service.token("restart-test", "operate")
        sim.stop_containers()
        sim.set_fail_mode(None)
        sim.set_load_seconds(60)
        server = service.serve()
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as client:
            swap_id = client.post("/api/swap", json={"model": "slow"}).json()["id"]
            wait_state(client, swap_id, {"loading"}, timeout=30)
            os.killpg(server.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            sim.set_load_seconds(0.5)
            service.serve(port=server.port)
            swap = wait_state(client, swap_id, {"interrupted"}, timeout=30)
            assert "is gone" in swap["error"], swap["error"]  # the restart knows its predecessor's worker died
            assert client.get("/api/status").json()["active_swap"] is None
            next_id = client.post("/api/swap", json={"model": "slow"}).json()["id"]
            swap = wait_state(client, next_id, {"ready", "failed"}, timeout=60)
            assert swap["state"] == "ready", swap["error"]
