"""A worker killed mid-swap: after a restart the swap is `interrupted`, and the next swap works."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from testkit.api import swap_wait
from testkit.service import Service

pytestmark = pytest.mark.integration


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
            swap_wait(client, swap_id, states={"loading"}, timeout=30)
            os.killpg(server.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
            sim.set_load_seconds(0.5)
            service.serve(port=server.port)
            swap = swap_wait(client, swap_id, states={"interrupted"}, timeout=30)
            assert "is gone" in swap["error"], swap["error"]  # the restart knows its predecessor's worker died
            assert client.get("/api/status").json()["active_swap"] is None
            next_id = client.post("/api/swap", json={"model": "slow"}).json()["id"]
            swap = swap_wait(client, next_id, states={"ready", "failed"}, timeout=60)
            assert swap["state"] == "ready", swap["error"]
