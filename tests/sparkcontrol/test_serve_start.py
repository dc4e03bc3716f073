"""`manage.py serve` as a real process: what it refuses before touching anything (a port in use, a data directory
another process serves from), what a restart after `kill -9` knows, and what the demo leaves behind."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from sparksim.cluster import find_sim_processes
from testkit.api import swap_wait

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SPARKCONTROL_DATA_DIR": str(data_dir), "DATABASE_URL": "", "REDIS_URL": ""}
    env.pop("SPARKSIM_LAUNCHER_DIR", None)
    env.update(extra)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Served:
    """A `serve` process whose output is collected in a file."""

    def __init__(self, env: dict[str, str], port: int, *args: str, log: Path) -> None:
        self.port = port
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(port), *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited {self.process.returncode}:\n{self.output()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not come up:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _run_serve(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "serve", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _cluster_row(data_dir: Path) -> tuple:
    with sqlite3.connect(data_dir / "sparkcontrol.sqlite3") as db:
        settings_row = db.execute("SELECT vllm_port, launcher_path FROM cluster_clustersettings").fetchall()
        hosts = db.execute("SELECT name, ssh_port, enabled FROM cluster_sparkhost ORDER BY name").fetchall()
        services = db.execute("SELECT key, url FROM cluster_service ORDER BY key").fetchall()
    return settings_row, hosts, services


def test_a_second_serve_on_a_port_in_use_changes_nothing_and_fails(tmp_path):
    data = tmp_path / "data"
    env = _env(data)
    port = _free_port()
    first = Served(env, port, "--demo", log=tmp_path / "first.log")
    try:
        first.wait_up()
        before = _cluster_row(data)
        sim_before = sorted(find_sim_processes(str(data / "sparksim")))
        assert sim_before
        second = _run_serve(env, "--port", str(port), "--demo")
        assert second.returncode != 0, second.stdout + second.stderr
        assert f"port {port}" in second.stderr and "already in use" in second.stderr, second.stderr
        assert "Demo:" not in second.stdout
        assert _cluster_row(data) == before
        assert sorted(find_sim_processes(str(data / "sparksim"))) == sim_before
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        # Another data directory on the same port: refused before its database is even created.
        other = tmp_path / "other"
        third = _run_serve(_env(other), "--port", str(port))
        assert third.returncode != 0 and "already in use" in third.stderr, third.stderr
        assert not (other / "sparkcontrol.sqlite3").exists()
    finally:
        first.stop()


def test_a_second_serve_on_the_same_data_directory_is_refused(tmp_path):
    env = _env(tmp_path)
    first = Served(env, _free_port(), log=tmp_path / "first.log")
    try:
        first.wait_up()
        second = _run_serve(env, "--port", str(_free_port()))
        assert second.returncode != 0, second.stdout + second.stderr
        assert str(tmp_path) in second.stderr and f"process {first.process.pid}" in second.stderr, second.stderr
        assert "SPARKCONTROL_DATA_DIR" in second.stderr and "REDIS_URL" in second.stderr
        assert httpx.get(f"http://127.0.0.1:{first.port}/api/health", timeout=5).status_code == 200
    finally:
        first.stop()
    # Stopped, the directory is free again; and a later start says how to reset the admin password.
    again = Served(env, _free_port(), log=tmp_path / "again.log")
    try:
        again.wait_up()
        assert "manage.py changepassword admin" in again.output()
    finally:
        again.stop()


def test_demo_restarts_after_kill_9(tmp_path):
    """A clean restart forgets what the old simulator served; after `kill -9` nothing of the simulator is left, and
    the restarted service marks the killed swap interrupted at once."""
    data = tmp_path / "data"
    env = _env(data, SPARKCONTROL_ADMIN_PASSWORD="pw-demo-restart-1")
    sim_root = str(data / "sparksim")
    port = _free_port()
    served = Served(env, port, "--demo", log=tmp_path / "serve1.log")
    token = None
    try:
        served.wait_up()
        token = _manage(env, "apitoken", "create", "restart", "--scope", "operate").strip().splitlines()[-1]
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        swap_id = client.post("/api/swap", json={"model": "tiny"}).json()["id"]
        assert swap_wait(client, swap_id, states={"ready", "failed"}, timeout=60)["state"] == "ready"
        assert client.get("/api/status").json()["serving"]["model"] == "tiny"
    finally:
        served.stop()
    served = Served(env, port, "--demo", log=tmp_path / "serve2.log")
    try:
        served.wait_up()
        assert client.get("/api/status").json()["serving"]["model"] is None
        (Path(sim_root) / "load_seconds").write_text("120\n")
        swap_id = client.post("/api/swap", json={"model": "tiny"}).json()["id"]
        swap_wait(client, swap_id, states={"loading"}, timeout=60)
        os.kill(served.process.pid, signal.SIGKILL)
        served.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while find_sim_processes(sim_root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert find_sim_processes(sim_root) == [], "simulator processes outlived serve"
    finally:
        served.stop()
    served = Served(env, port, "--demo", log=tmp_path / "serve3.log")
    try:
        served.wait_up()
        swap = client.get(f"/api/swap/{swap_id}").json()
        assert swap["state"] == "interrupted", swap
        assert not swap["error"].startswith("interrupted"), swap["error"]
        events = client.get(f"/api/swap/{swap_id}/events").json()
        assert not any("interrupted: interrupted" in event["message"] for event in events), events
        assert client.get("/api/status").json()["active_swap"] is None
    finally:
        client.close()
        served.stop()
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
    common = {
        "DATABASE_URL": fresh_postgres,
        "REDIS_URL": "redis://127.0.0.1:6379/14",
        "SPARKCONTROL_SECRET_KEY": "k" * 50,
    }
    serves = [
        Served(_env(tmp_path / f"d{n}", **common), _free_port(), "--no-worker", log=tmp_path / f"serve{n}.log")
        for n in range(2)
    ]
    try:
        for served in serves:
            served.wait_up()
        outputs = [served.output() for served in serves]
        assert sum("Created admin user" in text for text in outputs) == 1, outputs
        assert not any("Error" in text for text in outputs), outputs
    finally:
        for served in serves:
            served.stop()
    with psycopg.connect(fresh_postgres.replace("postgres://", "postgresql://")) as conn:
        assert conn.execute("SELECT count(*) FROM auth_user WHERE is_superuser").fetchone() == (1,)
