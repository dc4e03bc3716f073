"""A worker killed mid-swap: after a restart the swap is `interrupted`, and the next swap works."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _serve(env: dict[str, str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the service did not start")


def _wait_state(client: httpx.Client, swap_id: str, states: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        swap = client.get(f"/api/swap/{swap_id}").json()
        if swap["state"] in states:
            return swap
        time.sleep(0.1)
    raise AssertionError(f"swap never reached {states}: {swap}")


def test_killed_worker_leaves_an_interrupted_swap_and_the_next_swap_works(sim, tmp_path):
    env = {
        **os.environ,
        "SPARKCONTROL_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "SPARKCONTROL_HEARTBEAT_STALE_SECONDS": "3",
        "SPARKCONTROL_ADMIN_PASSWORD": "pw-restart-123",
        "LOCAL_MODEL_ROOTS": f"{sim.root}/models",
    }
    _manage(env, "migrate", "--no-input", "-v0")
    _manage(env, "sparksim_register", "--root", sim.root)
    (tmp_path / "models.yaml").write_text("models:\n  - key: slow\n    repo: sim/tiny-model\n")
    _manage(env, "catalog", "import", str(tmp_path / "models.yaml"))
    token = _manage(env, "apitoken", "create", "restart-test", "--scope", "operate").strip().splitlines()[-1]
    port = _free_port()
    sim.stop_containers()
    sim.set_fail_mode(None)
    sim.set_load_seconds(60)
    server = _serve(env, port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
    try:
        swap_id = client.post("/api/swap", json={"model": "slow"}).json()["id"]
        _wait_state(client, swap_id, {"loading"}, timeout=30)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        sim.set_load_seconds(0.5)
        server = _serve(env, port)
        swap = _wait_state(client, swap_id, {"interrupted"}, timeout=30)
        assert "is gone" in swap["error"], swap["error"]  # the restart knows its predecessor's worker died
        assert client.get("/api/status").json()["active_swap"] is None
        next_id = client.post("/api/swap", json={"model": "slow"}).json()["id"]
        swap = _wait_state(client, next_id, {"ready", "failed"}, timeout=60)
        assert swap["state"] == "ready", swap["error"]
    finally:
        client.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
        sim.stop_containers()
