"""A real Spark Control deployment for gateway tests and the gateway bench.

pytest-django's SQLite test database lives in memory and `live_server` is WSGI, which cannot relay a stream as
it is produced. So the gateway runs as the real service, `manage.py serve` (daphne, ASGI), in a subprocess with
a data directory of its own, in front of sparksim's fake vLLM (started by real swaps over real sshd) and
sparksim's fake embeddings / speech-to-text / text-to-speech servers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_REDIS_URL = os.environ.get("SPARKCONTROL_TEST_GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/13")

BOOTSTRAP = """
import json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from types import SimpleNamespace
from catalog.models import ModelEntry
from cluster.services import services_sync
from sparkcontrol.demo import sim_register
from accounts.tokens import apitoken_create
spec = json.loads(sys.argv[1])
data = json.loads(open(spec["cluster_json"]).read())
sim_register(sim=SimpleNamespace(
    root=data["root"], nodes=[SimpleNamespace(**n) for n in data["nodes"]], client_key_path=data["client_key_path"],
    launcher_path=data["launcher_path"], vllm_port=data["vllm_port"]))
for key in spec["models"]:
    ModelEntry.objects.get_or_create(key=key, defaults={"name": key, "repo": "sim/tiny-model"})
services_sync()
tokens = {scope: apitoken_create(name=f"gateway-test-{scope}", scope=scope)[1] for scope in spec["scopes"]}
print(json.dumps(tokens))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One `manage.py serve` process."""

    def __init__(self, deployment: Deployment, *, worker: bool, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "manage.py", "serve", "--port", str(self.port)]
        if not worker:
            argv.append("--no-worker")
        self.log_path = deployment.data_dir / f"serve-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**deployment.env, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"serve did not start: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class Deployment:
    """A data directory with its SQLite database, the simulated cluster registered, catalog, services, tokens."""

    def __init__(self, data_dir: Path, *, sim: Any, farm_services: dict[str, Any], models: list[str]) -> None:
        self.data_dir = data_dir
        self.sim = sim
        data_dir.mkdir(parents=True, exist_ok=True)
        redis.Redis.from_url(GATEWAY_REDIS_URL).flushdb()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKCONTROL_GATEWAY_")}
        self.env.update(
            {
                "SPARKCONTROL_DATA_DIR": str(data_dir),
                "SPARKCONTROL_ENV_FILE": str(data_dir / "none.env"),
                "DATABASE_URL": "",
                # Several serving processes on one data directory share a channel layer (serve refuses a second
                # one without it); a database of Redis of its own, emptied first.
                "REDIS_URL": GATEWAY_REDIS_URL,
                "DJANGO_SETTINGS_MODULE": "sparkcontrol.settings",
                "SPARKCONTROL_ADMIN_PASSWORD": "pw-gateway-123",
                "SPARKCONTROL_WORKER_INTERVAL": "0.2",
                "PYTHONPATH": str(ROOT),
            }
        )
        overrides = {"services": {}}
        for key, (service, models_served) in farm_services.items():
            overrides["services"][key] = {"url": service.url, "models": models_served}
        (data_dir / "services-overrides.yaml").write_text(json.dumps(overrides))
        spec = {
            "cluster_json": str(Path(sim.root) / "cluster.json"),
            "models": models,
            "scopes": ["inference", "read", "operate", "admin"],
        }
        out = self.python(["-c", BOOTSTRAP, json.dumps(spec)])
        self.tokens: dict[str, str] = json.loads(out.strip().splitlines()[-1])
        self.servers: list[Server] = []

    def python(self, argv: list[str], timeout: float = 120) -> str:
        done = subprocess.run(
            [sys.executable, *argv], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def run(self, code: str, timeout: float = 60) -> str:
        """Run Python with Django set up against this deployment's database; returns stdout."""
        return self.python(["-c", "import django\ndjango.setup()\n" + textwrap.dedent(code)], timeout=timeout)

    def serve(self, *, worker: bool = True, **env: str) -> Server:
        server = Server(self, worker=worker, env=env)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


def client(server: Server, token: str | None, **kwargs: Any) -> httpx.Client:
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


TERMINAL = ("ready", "failed", "cancelled", "interrupted")


def swap_wait(api: httpx.Client, swap_id: str, *, states: tuple[str, ...] = TERMINAL, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    swap: dict = {}
    while time.monotonic() < deadline:
        swap = api.get(f"/api/swap/{swap_id}").json()
        if swap["state"] in states:
            return swap
        time.sleep(0.05)
    raise AssertionError(f"swap {swap_id} never reached {states}: {swap}")
