"""What a run needs: a simulated cluster, a data directory, the service (`manage.py serve`) as a child process,
API tokens, a logged-in dashboard session, and this process's own ORM access to the service's database.

The harness configures Django in this process for the service's data directory, so it can set up the topology,
read swap rows and insert history directly; it never imports Django before that directory is chosen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import PYTHON, ROOT, Child, clean_env, free_port, spawn, tree_rss_kib, wait_port

MODEL_2NODE = "bench-2node"
MODEL_1NODE = "bench-1node"


@dataclass
class Harness:
    """One run's set-up; `close()` stops everything it started."""

    workdir: Path
    load_seconds: float = 2.0
    serve_args: list[str] = field(default_factory=list)
    sim: Any = None
    service: Child | None = None
    port: int = 0
    tokens: dict[str, str] = field(default_factory=dict)
    session_cookie: str = ""
    env: dict[str, str] = field(default_factory=dict)
    _own_workdir: bool = False
    _client: httpx.Client | None = None

    @classmethod
    def create(cls, *, workdir: str | None, load_seconds: float, serve_args: list[str]) -> Harness:
        own = workdir is None
        path = Path(workdir or tempfile.mkdtemp(prefix="sparkcontrol-bench-")).resolve()
        path.mkdir(parents=True, exist_ok=True)
        harness = cls(workdir=path, load_seconds=load_seconds, serve_args=serve_args, _own_workdir=own)
        harness.logs.mkdir(exist_ok=True)
        return harness

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- set-up -------------------------------------------------------------------------------------------------
    def start(self) -> Harness:
        from sparksim import SimCluster

        self.sim = SimCluster(root=self.workdir / "sim", nodes=2, load_seconds=self.load_seconds).start()
        self.data_dir.mkdir(exist_ok=True)
        self.env = clean_env(
            DJANGO_SETTINGS_MODULE="sparkcontrol.settings",
            SPARKCONTROL_DATA_DIR=str(self.data_dir),
            SPARKCONTROL_ENV_FILE=str(self.workdir / "no.env"),
            SPARKCONTROL_ADMIN_PASSWORD="bench-admin-password",
        )
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True, capture_output=True
        )
        self._django_setup()
        self._topology()
        self.start_service()
        return self

    def _django_setup(self) -> None:
        """Point this process's Django at the service's database (before anything imports the settings)."""
        for key in ("DJANGO_SETTINGS_MODULE", "SPARKCONTROL_DATA_DIR", "SPARKCONTROL_ENV_FILE"):
            os.environ[key] = self.env[key]
        for key in [k for k in os.environ if k.startswith(("DATABASE_", "REDIS_"))]:
            del os.environ[key]
        import django

        django.setup()
        import logging

        logging.getLogger().setLevel(logging.WARNING)

    def _topology(self) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client

        from accounts.tokens import apitoken_create
        from catalog.models import ModelEntry
        from sparkcontrol.demo import sim_register

        sim_register(sim=self.sim)
        ModelEntry.objects.update_or_create(
            key=MODEL_2NODE, defaults={"name": "bench, both Sparks", "repo": "sim/big-model", "nodes": 2}
        )
        ModelEntry.objects.update_or_create(
            key=MODEL_1NODE, defaults={"name": "bench, head only", "repo": "sim/tiny-model", "nodes": 1}
        )
        for scope in ("read", "operate", "admin"):
            _, self.tokens[scope] = apitoken_create(name=f"bench-{scope}-{os.getpid()}-{time.time_ns()}", scope=scope)
        user, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
        client = Client()
        client.force_login(user)
        self.session_cookie = f"sessionid={client.cookies['sessionid'].value}"

    def start_service(self, *, serve_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        args = self.serve_args if serve_args is None else serve_args
        argv = [PYTHON, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.service = spawn(f"serve-{self.port}", argv, env={**self.env, **(env or {})}, log_dir=self.logs)
        try:
            wait_port(self.port, timeout=90, process=self.service.process)
            self.wait_healthy()
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.service.output()}") from exc

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get(f"{self.url}/api/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the service did not answer /api/health")

    def restart_service(self, *, serve_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        if self.service is not None:
            self.service.stop()
        self.start_service(serve_args=serve_args, env=env)

    # --- helpers ------------------------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        """One HTTP client for the run's own API calls: a new client costs ~15 ms (it loads the CA bundle), which
        must not be counted in a swap's wall time."""
        if self._client is None:
            self._client = httpx.Client(timeout=30, trust_env=False)
        return self._client

    def bearer(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def service_rss_kib(self) -> int:
        assert self.service is not None
        return tree_rss_kib(self.service.pid)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.service is not None:
            self.service.stop()
        if self.sim is not None:
            self.sim.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may never have been set up
            pass
        if self._own_workdir and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
