"""`manage.py serve --demo`: a newcomer's first minute — simulated Sparks, live tiles, a swap — and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sparksim.cluster import find_sim_processes
from tests.integration.test_swap_restart import _free_port, _manage, _wait_state

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_demo_serves_swaps_and_stops_cleanly(tmp_path):
    env = {**os.environ, "SPARKCONTROL_DATA_DIR": str(tmp_path), "DATABASE_URL": "", "REDIS_URL": ""}
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        banner = []
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            banner.append(line)
            if line.startswith("Dashboard: "):
                break
        text = "".join(banner)
        assert "Created admin user 'admin' with password: " in text and "Demo: simulated Sparks" in text
        token = _manage(env, "apitoken", "create", "demo", "--scope", "operate").strip().splitlines()[-1]
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        swap_id = client.post("/api/swap", json={"model": "tiny"}).json()["id"]
        swap = _wait_state(client, swap_id, {"ready", "failed"}, timeout=60)
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
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    deadline = time.monotonic() + 10
    while find_sim_processes(str(tmp_path / "sparksim")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert find_sim_processes(str(tmp_path / "sparksim")) == []
