"""`manage.py serve --demo`: a newcomer's first minute — simulated Sparks, live tiles, a swap — and a clean stop."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from sparksim.cluster import find_sim_processes
from testkit.api import swap_wait
from testkit.service import Service

pytestmark = pytest.mark.integration


def test_demo_serves_swaps_and_stops_cleanly(tmp_path):
    with Service(tmp_path, data_dir=tmp_path) as service:
        server = service.serve(args=["--demo"], wait=False)
        deadline = time.monotonic() + 90
        while "\nDashboard: " not in "\n" + server.output() and server.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = server.output()
        assert "Created admin user 'admin' with password: " in text and "Demo: simulated Sparks" in text
        service.wait_ready(server)
        token = service.token("demo", "operate")
        client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
        swap_id = client.post("/api/swap", json={"model": "tiny"}).json()["id"]
        swap = swap_wait(client, swap_id, states={"ready", "failed"}, timeout=60)
        assert swap["state"] == "ready", swap["error"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            endpoints = client.get("/api/endpoints").json()
            tiles = {e["key"]: e["probe"]["status"] for e in endpoints}
            if set(tiles.values()) == {"up"}:
                break
            time.sleep(0.5)
        assert set(tiles.values()) == {"up"}, [(e["key"], e["probe"]) for e in endpoints]
        client.close()
        # The stop under test: SIGTERM to `serve` alone, which must stop the simulator it started itself.
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while find_sim_processes(str(tmp_path / "sparksim")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert find_sim_processes(str(tmp_path / "sparksim")) == []
