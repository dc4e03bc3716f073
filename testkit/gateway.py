"""A Spark Control deployment for the gateway's tests and bench: one data directory (SQLite) with the simulated
cluster registered, a catalog, the services of a fake-service farm and a token of each scope, served by several
`manage.py serve` processes (each with settings of its own) that share a channel layer on a Redis database.

pytest-django's SQLite test database lives in memory and `live_server` is WSGI, which cannot relay a stream as it
is produced; the gateway runs as the real service (daphne, ASGI) in front of sparksim's fake vLLM (started by real
swaps over real sshd) and sparksim's fake embeddings / speech-to-text / text-to-speech servers.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import redis

from testkit.service import Process, Service

GATEWAY_REDIS_URL = os.environ.get("SPARKCONTROL_TEST_GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/13")
SCOPES = ["inference", "read", "operate", "admin"]

BOOTSTRAP = """
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
result = {scope: apitoken_create(name=f"gateway-test-{scope}", scope=scope)[1] for scope in spec["scopes"]}
"""


class Deployment:
    """The installation (`service`), its API tokens by scope and its serving processes."""

    def __init__(self, data_dir: Path, *, sim: Any, farm_services: dict[str, Any], models: list[str]) -> None:
        self.data_dir = data_dir
        self.sim = sim
        redis.Redis.from_url(GATEWAY_REDIS_URL).flushdb()
        # Several serving processes on one data directory share a channel layer (serve refuses a second one
        # without it); a database of Redis of its own, emptied first.
        self.service = Service(
            data_dir,
            data_dir=data_dir,
            redis_url=GATEWAY_REDIS_URL,
            env={"SPARKCONTROL_ADMIN_PASSWORD": "pw-gateway-123", "SPARKCONTROL_WORKER_INTERVAL": "0.2"},
        )
        self.tokens: dict[str, str] = {}
        try:
            overrides = {"services": {}}
            for key, (service, models_served) in farm_services.items():
                overrides["services"][key] = {"url": service.url, "models": models_served}
            (data_dir / "services-overrides.yaml").write_text(json.dumps(overrides))
            spec = {"cluster_json": str(Path(sim.root) / "cluster.json"), "models": models, "scopes": SCOPES}
            self.tokens = self.service.run(BOOTSTRAP, json.dumps(spec))
        except BaseException:
            self.service.stop()
            raise

    def run(self, code: str, timeout: float = 60) -> str:
        """Run Python with Django set up against this deployment's database; returns stdout."""
        return self.service.python(["-c", "import django\ndjango.setup()\n" + textwrap.dedent(code)], timeout=timeout)

    def serve(self, *, worker: bool = True, **env: str) -> Process:
        """One more `manage.py serve` (with the task worker unless `worker=False`) with `env` on top."""
        return self.service.serve(f"serve-{len(self.service.procs) + 1}", worker=worker, env=env)

    def close(self) -> None:
        self.service.stop()
