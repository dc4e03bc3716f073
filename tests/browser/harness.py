"""The real service for browser tests: `manage.py serve` in a subprocess with its own data directory, driving a
sparksim cluster, reached over HTTP like any client. Optionally scaled out: Redis channel layer, web process
without a worker, and a separate `manage.py db_worker` process.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
ADMIN_USER = "admin"
ADMIN_PASSWORD = "browser-admin-pw-4c1e"
OPERATOR_USER = "operator"
OPERATOR_PASSWORD = "browser-operator-pw-9d2b"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TERMINAL = {"ready", "failed", "cancelled", "interrupted"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One Spark Control installation under test: its processes, data directory, tokens and sparksim."""

    tmp: Path
    sim: Any
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_process: bool = False  # True: `serve --no-worker` plus a separate `manage.py db_worker`
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    operate_token: str = ""
    admin_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- set-up -------------------------------------------------------------------------------------------------
    def start(self) -> Server:
        data = self.tmp / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "SPARKCONTROL_"))}
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "sparkcontrol.settings",
                "PYTHONUNBUFFERED": "1",
                "SPARKCONTROL_ENV_FILE": str(self.tmp / "no.env"),
                "SPARKCONTROL_DATA_DIR": str(data),
                "SPARKCONTROL_ADMIN_USER": ADMIN_USER,
                "SPARKCONTROL_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "SPARKCONTROL_WORKER_INTERVAL": "0.2",
                "SPARKCONTROL_ACTIONS_GATEWAY_URL": self.url,  # a warm-up action asks this server's own /v1
                "LOCAL_MODEL_ROOTS": f"{self.sim.root}/models",
                "HF_TOKEN": "",
                **self.extra_env,
            }
        )
        self.manage("migrate", "-v", "0")
        local_path = self.sim.make_local_model("local-llama")
        self.run(
            f"""
            from types import SimpleNamespace
            from django.contrib.auth import get_user_model
            from catalog.models import ModelEntry
            from sparkcontrol.demo import sim_register
            from sparkcontrol.firstrun import admin_ensure

            admin_ensure()
            get_user_model().objects.create_user({OPERATOR_USER!r}, "", {OPERATOR_PASSWORD!r})
            sim = json.loads({json.dumps(json.dumps(self.sim.as_json()))})
            nodes = [SimpleNamespace(**node) for node in sim["nodes"]]
            sim_register(sim=SimpleNamespace(**{{**sim, "nodes": nodes}}))
            # Sweeps run when a test asks (a sweep in another process), not on a timer that could race its checks.
            from cluster.services import cluster_settings_get
            cluster = cluster_settings_get()
            cluster.probe_status_interval_s = cluster.probe_deep_interval_s = 3600
            cluster.probe_connectivity_interval_s = 3600
            cluster.save()
            for entry in [
                ModelEntry(key="tiny", name="Tiny", repo="sim/tiny-model"),
                ModelEntry(key="small", name="Small", repo="sim/small-model"),
                ModelEntry(key="local-llama", name="Local Llama", local_path={local_path!r}),
                ModelEntry(key="retired", name="Retired model", repo="sim/retired-model", enabled=False),
            ]:
                entry.full_clean()
                entry.save()
            """
        )
        self.operate_token = self.token("browser-operate", "operate")
        self.admin_token = self.token("browser-admin", "admin")
        serve = ["manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.worker_process:
            self.spawn("web", [*serve, "--no-worker"])
            self.spawn(
                "worker", ["manage.py", "db_worker", "--queue-name", "*", "--interval", "0.2", "--no-startup-delay"]
            )
        else:
            self.spawn("web", serve)
        self.wait_ready()
        return self

    def manage(self, *argv: str, timeout: float = 120) -> str:
        argv_full = [sys.executable, "manage.py", *argv]
        done = subprocess.run(argv_full, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"manage.py {' '.join(argv)} failed:\n{done.stderr[-3000:]}"
        return done.stdout

    def run(self, code: str, timeout: float = 120) -> None:
        """Run Django code in a fresh process against this installation's database."""
        script = "import django, json\ndjango.setup()\n" + textwrap.dedent(code)
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, done.stderr[-3000:]

    def token(self, name: str, scope: str) -> str:
        """`manage.py apitoken create` prints the token alone on its last line."""
        return self.manage("apitoken", "create", name, "--scope", scope).strip().splitlines()[-1]

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.tmp / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, nothing left behind
        )
        log.close()
        self.processes.append(process)
        return process

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}" for path in sorted(self.tmp.glob("*.log"))
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for process in self.processes:
                assert process.poll() is None, f"a server process exited:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the server did not come up:\n{self.output()}"
            time.sleep(0.1)
        if self.worker_process:
            while "Starting worker" not in (self.tmp / "worker.log").read_text(errors="replace"):
                assert self.processes[-1].poll() is None, f"the worker exited:\n{self.output()}"
                assert time.monotonic() < deadline, f"the worker did not start:\n{self.output()}"
                time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    # --- the API, as automation uses it -----------------------------------------------------------------------
    def api(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.operate_token}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}/api{path}", headers=headers, timeout=30, **kwargs)

    def swap_start(self, model: str) -> dict[str, Any]:
        response = self.api("POST", "/swap", json={"model": model})
        assert response.status_code == 202, response.text
        return response.json()

    def swap_wait(self, swap_id: str, states: set[str] = TERMINAL, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            swap = self.api("GET", f"/swap/{swap_id}").json()
            if swap["state"] in states:
                return swap
            assert time.monotonic() < deadline, f"swap {swap_id} is still {swap['state']}:\n{self.output()}"
            time.sleep(0.1)

    def events(self, swap_id: str) -> list[dict[str, Any]]:
        response = self.api("GET", f"/swap/{swap_id}/events", params={"after": 0, "limit": 5000})
        assert response.status_code == 200, response.text
        return response.json()

    def quiesce(self) -> None:
        """No active swap, no lock, no scheduled job, a fast and healthy simulator: the start of every test."""
        self.sim.set_fail_mode(None)
        self.sim.set_load_seconds(1.0)
        active = self.api("GET", "/status").json()["active_swap"]
        if active is not None:
            self.api("POST", f"/swap/{active['id']}/cancel")
            self.swap_wait(active["id"])
        response = self.api("DELETE", "/swap/lock", params={"force": "true"}, token=self.admin_token)
        assert response.status_code == 204, response.text
        for job in self.api("GET", "/schedule").json():
            assert self.api("DELETE", f"/schedule/{job['id']}").status_code == 204
