"""What a run needs: a simulated cluster, a data directory, the service (`manage.py serve`) as a child process,
API tokens, a logged-in dashboard session, and this process's own ORM access to the service's database.

The harness configures Django in this process for the service's data directory, so it can set up the topology,
read swap rows and insert history directly; it never imports Django before that directory is chosen.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import tree_rss_kib
from testkit.service import Process, Service

REPO = Path(__file__).resolve().parent.parent
MODEL_2NODE = "bench-2node"
MODEL_1NODE = "bench-1node"


@dataclass
class Harness:
    """One run's set-up (a `testkit` service with the simulator it started); `close()` stops everything."""

    workdir: Path
    load_seconds: float = 2.0
    serve_args: list[str] = field(default_factory=list)
    service: Process | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    session_cookie: str = ""
    _own_workdir: bool = False
    _client: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.installation = Service(self.workdir, env={"SPARKCONTROL_ADMIN_PASSWORD": "bench-admin-password"})

    @classmethod
    def create(cls, *, workdir: str | None, load_seconds: float, serve_args: list[str]) -> Harness:
        own = workdir is None
        path = Path(workdir or tempfile.mkdtemp(prefix="sparkcontrol-bench-")).resolve()
        return cls(workdir=path, load_seconds=load_seconds, serve_args=serve_args, _own_workdir=own)

    @property
    def logs(self) -> Path:
        return self.installation.logs_dir

    @property
    def data_dir(self) -> Path:
        return self.installation.data_dir

    @property
    def sim(self) -> Any:
        return self.installation.sim

    @property
    def env(self) -> dict[str, str]:
        return self.installation.env

    @property
    def port(self) -> int:
        assert self.service is not None and self.service.port is not None
        return self.service.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- set-up -------------------------------------------------------------------------------------------------
    def start(self) -> Harness:
        compile_bytecode()
        self.installation.simulate(nodes=2, load_seconds=self.load_seconds)
        self.installation.manage("migrate", "-v", "0")
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
        args = self.serve_args if serve_args is None else serve_args
        self.service = self.installation.serve("serve", args=args, env=env)

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
        try:
            self.installation.stop()
        finally:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: BLE001 - Django may never have been set up
                pass
            if self._own_workdir and not os.environ.get("BENCH_KEEP"):
                shutil.rmtree(self.workdir, ignore_errors=True)


def compile_bytecode() -> None:
    """Write the project's bytecode, as a deployment's first start does, so the service is measured as it runs from
    then on. Where PYTHONDONTWRITEBYTECODE is set (as on the machines this runs on), every start would otherwise
    compile every module from source, and the compiler's leftovers stay in the heap (~1.6 MiB of idle RSS)."""
    compileall.compile_dir(REPO, quiet=1, rx=re.compile(r"/(\.venv|tests|data|node_modules|\.git)/"))
