"""The real service for browser tests: `manage.py serve` in a subprocess with its own data directory, driving a
sparksim cluster, reached over HTTP like any client. Optionally scaled out: Redis channel layer, web process
without a worker, and a separate `manage.py db_worker` process.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from testkit.service import Service, free_port

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


@dataclass
class Server:
    """One Spark Control installation under test (a `testkit` service): tokens, users and catalog of its own."""

    tmp: Path
    sim: Any
    extra_env: dict[str, str] = field(default_factory=dict)
    worker_process: bool = False  # True: `serve --no-worker` plus a separate `manage.py db_worker`
    operate_token: str = ""
    admin_token: str = ""

    def __post_init__(self) -> None:
        self.port = free_port()  # known before the service starts: its own /v1 address is part of its settings
        self.service = Service(
            self.tmp,
            env={
                "SPARKCONTROL_ADMIN_USER": ADMIN_USER,
                "SPARKCONTROL_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "SPARKCONTROL_WORKER_INTERVAL": "0.2",
                "SPARKCONTROL_ACTIONS_GATEWAY_URL": self.url,  # a warm-up action asks this server's own /v1
                "LOCAL_MODEL_ROOTS": f"{self.sim.root}/models",
                "HF_TOKEN": "",
                **self.extra_env,
            },
        )
        self.service.on_stop(self.sim.stop_containers)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- set-up -------------------------------------------------------------------------------------------------
    def start(self) -> Server:
        self.service.manage("migrate", "-v", "0")
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
        self.operate_token = self.service.token("browser-operate", "operate")
        self.admin_token = self.service.token("browser-admin", "admin")
        if self.worker_process:
            web = self.service.serve("web", worker=False, wait=False, port=self.port)
            self.service.wait_ready(web, self.service.db_worker("worker", wait=False))
        else:
            self.service.serve("web", port=self.port)
        return self

    def run(self, code: str, timeout: float = 120) -> None:
        """Run Django code in a fresh process against this installation's database."""
        self.service.run(code, timeout=timeout)

    def output(self) -> str:
        return self.service.logs()

    def stop(self) -> None:
        """Stop the processes and the simulator's containers."""
        self.service.stop()

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
