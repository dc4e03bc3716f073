"""`manage.py serve` as a real process: what it refuses before touching anything (a port in use, a data directory
another process serves from), what a restart after `kill -9` knows, and what the demo leaves behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from sparksim.cluster import find_sim_processes
from testkit.api import swap_wait
from testkit.service import Process, Service, free_port

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
pytestmark = pytest.mark.integration


def _stop(server: Process) -> None:
    """SIGTERM to `serve` alone, as a service manager stops it: what it started must stop with it."""
    if server.alive():
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)


def _cluster_row(data_dir: Path) -> tuple:
    with sqlite3.connect(data_dir / "sparkcontrol.sqlite3") as db:
        settings_row = db.execute("SELECT vllm_port, launcher_path FROM cluster_clustersettings").fetchall()
        hosts = db.execute("SELECT name, ssh_port, enabled FROM cluster_sparkhost ORDER BY name").fetchall()
        services = db.execute("SELECT key, url FROM cluster_service ORDER BY key").fetchall()
    return settings_row, hosts, services


def test_a_second_serve_on_a_port_in_use_changes_nothing_and_fails(tmp_path):
    data = tmp_path / "data"
    with Service(tmp_path, data_dir=data) as service:
        first = service.serve("first", args=["--demo"])
        port = first.port
        before = _cluster_row(data)
        sim_before = sorted(find_sim_processes(str(data / "sparksim")))
        assert sim_before
        second = service.completed(["manage.py", "serve", "--port", str(port), "--demo"], timeout=60)
        assert second.returncode != 0, second.stdout + second.stderr
        assert f"port {port}" in second.stderr and "already in use" in second.stderr, second.stderr
        assert "Demo:" not in second.stdout
        assert _cluster_row(data) == before
        assert sorted(find_sim_processes(str(data / "sparksim"))) == sim_before
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        # Another data directory on the same port: refused before its database is even created.
        other = tmp_path / "other"
        third = service.completed(
            ["manage.py", "serve", "--port", str(port)], env={"SPARKCONTROL_DATA_DIR": str(other)}, timeout=60
        )
        assert third.returncode != 0 and "already in use" in third.stderr, third.stderr
        assert not (other / "sparkcontrol.sqlite3").exists()
        _stop(first)


def test_a_second_serve_on_the_same_data_directory_is_refused(tmp_path):
    with Service(tmp_path, data_dir=tmp_path) as service:
        first = service.serve("first")
        second = service.completed(["manage.py", "serve", "--port", str(free_port())], timeout=60)
        assert second.returncode != 0, second.stdout + second.stderr
        assert str(tmp_path) in second.stderr and f"process {first.pid}" in second.stderr, second.stderr
        assert "SPARKCONTROL_DATA_DIR" in second.stderr and "REDIS_URL" in second.stderr
        assert httpx.get(f"{first.url}/api/health", timeout=5).status_code == 200
        _stop(first)
        # Stopped, the directory is free again; and a later start says how to reset the admin password.
        again = service.serve("again")
        assert "manage.py changepassword admin" in again.output()
        _stop(again)


def test_demo_restarts_after_kill_9(tmp_path):
    """A clean restart forgets what the old simulator served; after `kill -9` nothing of the simulator is left, and
    the restarted service marks the killed swap interrupted at once."""
    data = tmp_path / "data"
    sim_root = str(data / "sparksim")
    with Service(tmp_path, data_dir=data, env={"SPARKCONTROL_ADMIN_PASSWORD": "pw-demo-restart-1"}) as service:
        served = service.serve("serve1", args=["--demo"])
        port = served.port
        token = service.token("restart", "operate")
        client = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {token}"})
        swap_id = client.post("/api/swap", json={"model": "tiny"}).json()["id"]
        assert swap_wait(client, swap_id, states={"ready", "failed"}, timeout=60)["state"] == "ready"
        assert client.get("/api/status").json()["serving"]["model"] == "tiny"
        _stop(served)
        served = service.serve("serve2", port=port, args=["--demo"])
        assert client.get("/api/status").json()["serving"]["model"] is None
        (Path(sim_root) / "load_seconds").write_text("120\n")
        swap_id = client.post("/api/swap", json={"model": "tiny"}).json()["id"]
        swap_wait(client, swap_id, states={"loading"}, timeout=60)
        os.kill(served.pid, signal.SIGKILL)
        served.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while find_sim_processes(sim_root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert find_sim_processes(sim_root) == [], "simulator processes outlived serve"
        served = service.serve("serve3", port=port, args=["--demo"])
        swap = client.get(f"/api/swap/{swap_id}").json()
        assert swap["state"] == "interrupted", swap
        assert not swap["error"].startswith("interrupted"), swap["error"]
        events = client.get(f"/api/swap/{swap_id}/events").json()
        assert not any("interrupted: interrupted" in event["message"] for event in events), events
        assert client.get("/api/status").json()["active_swap"] is None
        client.close()
        _stop(served)
    assert find_sim_processes(sim_root) == []


@pytest.fixture
def fresh_postgres() -> str:
    name = f"sc_start_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_serves_started_together_on_a_fresh_postgres_both_start(tmp_path, fresh_postgres):
    with Service(
        tmp_path,
        database_url=fresh_postgres,
        redis_url="redis://127.0.0.1:6379/14",
        data_dir_per_process=True,
        env={"SPARKCONTROL_SECRET_KEY": "k" * 50},
    ) as service:
        serves = [service.serve(f"serve{n}", worker=False, wait=False) for n in range(2)]
        service.wait_ready(*serves)
        outputs = [served.output() for served in serves]
        assert sum("Created admin user" in text for text in outputs) == 1, outputs
        assert not any("Error" in text for text in outputs), outputs
    with psycopg.connect(fresh_postgres.replace("postgres://", "postgresql://")) as conn:
        assert conn.execute("SELECT count(*) FROM auth_user WHERE is_superuser").fetchone() == (1,)


def _connections_held(pid: int, port: int) -> int:
    """Established TCP connections to `port` among the sockets process `pid` holds (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    held = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                held += 1
    return held


def test_serve_with_two_processes_spreads_connections_and_a_second_serve_on_its_port_is_refused(tmp_path):
    import re
    import socket

    with Service(tmp_path, redis_url="redis://127.0.0.1:6379/12") as service:
        server = service.serve("serve", args=["--workers", "2"])
        port = server.port
        pids = [int(pid) for pid in re.search(r"2 processes: (\d+), (\d+)", server.output()).groups()]
        # Together, as a pool of keep-alive clients connects: the handshakes complete while neither process has
        # looked at its socket yet.
        clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(40)]
        for client in clients:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                held = [_connections_held(pid, port) for pid in pids]
                if sum(held) == 40:
                    break
                time.sleep(0.1)
            # Each process has a listening socket of its own: the kernel spreads the 40 connections (fewer than 5 on
            # one side would happen about once in ten million starts).
            assert sum(held) == 40 and min(held) >= 5, held
        finally:
            for client in clients:
                client.close()
        second = service.completed(["manage.py", "serve", "--port", str(port), "--workers", "2"], timeout=60)
        assert second.returncode != 0 and "already in use" in second.stderr, second.stdout + second.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        _stop(server)


def test_serve_with_djangos_own_handler(tmp_path):
    """SPARKCONTROL_FAST_HANDLER=0, the way round an unverified Django: the same service, the edge checks included."""
    with Service(tmp_path, data_dir=tmp_path / "data", env={"SPARKCONTROL_FAST_HANDLER": "0"}) as service:
        served = service.serve("plain", worker=False)
        assert "Django's own ASGI handler (SPARKCONTROL_FAST_HANDLER=0)" in served.output()
        url = served.url
        assert httpx.get(f"{url}/api/swap/lock", timeout=10).status_code == 401
        # A large body with credentials that name nobody: refused at the socket by the edge's own pool.
        refused = httpx.post(
            f"{url}/api/swap/lock", content=b"x" * 100_000, headers={"Authorization": "Bearer nobody"}, timeout=10
        )
        assert refused.status_code == 401 and refused.headers["connection"] == "close"
        assert httpx.get(f"{url}/admin/login/", timeout=10).status_code == 200
