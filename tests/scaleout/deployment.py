"""A scaled-out Spark Control on this machine: a Postgres database and a Redis database of its own, web processes
(`manage.py serve --no-worker`, daphne; uvicorn for plain HTTP) and `manage.py db_worker` processes, driving a
sparksim cluster. Everything is reached the way an operator or a client would: HTTP, websockets, SQL, signals.
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from testkit.service import Process, Service

POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"
ADMIN_USER = "ops"
ADMIN_PASSWORD = "scaleout-admin-pw-7f3a"
# Markers of every secret the run hands out, so a scan can look for them afterwards.
HF_TOKEN = "hf_scaleoutSECRET" + uuid.uuid4().hex
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex


@dataclass
class Deployment:
    """Databases, processes and the simulated cluster of one scaled-out set-up (a `testkit` service whose every
    process has a data directory of its own, as on machines of their own)."""

    tmp: Path
    sim: Any
    database: str = field(default_factory=lambda: f"sparkcontrol_scaleout_{uuid.uuid4().hex[:10]}")
    redis_db: int = field(default_factory=lambda: random.randint(1, 15))

    def __post_init__(self) -> None:
        self.service = Service(
            self.tmp,
            database_url=f"{POSTGRES}/{self.database}",
            redis_url=f"{REDIS}/{self.redis_db}",
            data_dir_per_process=True,
            env={
                # Every process must share the key (sessions signed by one web process are read by another).
                "SPARKCONTROL_SECRET_KEY": "scaleout-" + uuid.uuid4().hex + uuid.uuid4().hex,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "SPARKCONTROL_HEARTBEAT_STALE_SECONDS": "10",
                "SPARKCONTROL_METRICS_TOKEN": METRICS_TOKEN,
                "HF_TOKEN": HF_TOKEN,
                "LOCAL_MODEL_ROOTS": f"{self.sim.root}/models",
                "SPARKCONTROL_WEBHOOK_ALLOW_PRIVATE": "true",  # the test receivers listen on 127.0.0.1
            },
        )
        self.procs = self.service.procs

    # --- set-up ---------------------------------------------------------------------------------------------
    def create(self) -> Deployment:
        self.service.on_stop(lambda: redis.Redis.from_url(f"{REDIS}/{self.redis_db}").flushdb())
        self.service.on_stop(lambda: self._admin_sql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self._admin_sql(f'CREATE DATABASE "{self.database}"')
        redis.Redis.from_url(f"{REDIS}/{self.redis_db}").flushdb()
        self.manage("migrate", "-v", "0")
        self.run(
            f"""
            from django.contrib.auth import get_user_model
            get_user_model().objects.create_superuser({ADMIN_USER!r}, "", {ADMIN_PASSWORD!r})
            """
        )
        self.register_sim()
        return self

    def _admin_sql(self, sql: str) -> None:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql)

    def register_sim(self) -> None:
        """The sparksim nodes as the topology, with pinned host keys (what `manage.py spark` would set)."""
        self.run(
            f"""
            from cluster.models import Role, SparkHost
            from cluster.services import cluster_settings_get
            sim = json.loads({json.dumps(self.sim.as_json())!r})
            for node in sim["nodes"]:
                SparkHost.objects.update_or_create(name=node["name"], defaults=dict(
                    address=node["host"], cluster_ip=node["ip"], ssh_port=node["port"], ssh_user=node["user"],
                    role=Role.HEAD if node["role"] == "head" else Role.WORKER, key_path=sim["client_key_path"],
                    host_key=node["host_key_line"], enabled=True))
            cluster = cluster_settings_get()
            cluster.vllm_port = sim["vllm_port"]
            cluster.launcher_path = sim["launcher_path"]
            cluster.save()
            """
        )

    def manage(self, *argv: str, timeout: float = 120) -> str:
        return self.service.manage(*argv, timeout=timeout)

    def run(self, code: str, timeout: float = 60) -> Any:
        """Run Django code in a fresh process on the deployment's database; returns `result` (JSON)."""
        return self.service.run(code, timeout=timeout)

    def api_token(self, name: str, scope: str) -> str:
        return self.service.token(name, scope)

    # --- processes ------------------------------------------------------------------------------------------
    def start_web(self, name: str) -> Process:
        return self.service.serve(name, worker=False, wait=False)

    def start_uvicorn(self, name: str) -> Process:
        return self.service.uvicorn(name, wait=False)

    def start_worker(self, name: str) -> Process:
        # Every queue (swaps, default, webhooks): two such workers compete for each task, swaps included.
        return self.service.db_worker(name, wait=False)

    def wait_ready(self, *procs: Process, timeout: float = 60) -> None:
        self.service.wait_ready(*procs, timeout=timeout)

    def worker_pids(self) -> dict[int, str]:
        return {proc.pid: name for name, proc in self.procs.items() if proc.port is None and proc.alive()}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].kill(sig)

    # --- reads ----------------------------------------------------------------------------------------------
    def swap_rows(self, swap_id: str) -> dict[str, Any]:
        """The swap, its events, the task rows that ran it, straight from the database."""
        return self.run(
            f"""
            from django_tasks_db.models import DBTaskResult
            from swaps.models import Swap
            swap = Swap.objects.get(pk={swap_id!r})
            tasks = [
                dict(status=t.status, worker_ids=t.worker_ids, args=t.args_kwargs)
                for t in DBTaskResult.objects.filter(task_path="swaps.tasks.swap_execute")
                if t.args_kwargs["args"] == [{swap_id!r}]
            ]
            result = dict(
                state=swap.state, worker=swap.worker, error=swap.error,
                events=list(swap.events.order_by("seq").values("seq", "kind", "state", "message")),
                tasks=tasks,
            )
            """
        )

    # --- tear-down ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, drop the database, empty the Redis database."""
        self.service.stop()


class DashboardSocket:
    """A logged-in dashboard's websocket (`/ws/swaps/`) on one web process, collecting messages in a thread."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.cookies = login_cookies(base_url, username, password)
        self.messages: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="dashboard-socket")

    def __enter__(self) -> DashboardSocket:
        self.thread.start()
        assert self.opened.wait(15), f"websocket did not open: {self.error!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        uri = self.base_url.replace("http://", "ws://") + "/ws/swaps/"
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            with connect(uri, additional_headers={"Cookie": cookie}, origin=self.base_url, open_timeout=10) as ws:
                self.opened.set()
                while not self.stop.is_set():
                    try:
                        raw = ws.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    except ConnectionClosed:
                        return
                    self.messages.append(json.loads(raw))
        except BaseException as exc:  # noqa: BLE001 - reported by the test through `error`
            self.error = exc
            self.opened.set()

    def events_of(self, swap_id: str) -> list[dict[str, Any]]:
        events = []
        for message in list(self.messages):
            if message.get("kind") == "swap_events" and message.get("swap_id") == swap_id:
                events.extend(message["events"])
        return events

    def wait_for_state(self, swap_id: str, state: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["kind"] == "state" and e["state"] == state for e in self.events_of(swap_id)):
            assert self.error is None, f"websocket failed: {self.error!r}"
            assert time.monotonic() < deadline, f"no {state} event for {swap_id} on the socket: {self.messages[-5:]}"
            time.sleep(0.05)


def login_cookies(base_url: str, username: str, password: str) -> dict[str, str]:
    """Log in through the admin's login form (CSRF and all) and return the session cookies."""
    with httpx.Client(base_url=base_url, timeout=10, follow_redirects=False) as client:
        page = client.get("/admin/login/?next=/admin/")
        assert page.status_code == 200, page.status_code
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        done = client.post(
            "/admin/login/?next=/admin/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": csrf, "next": "/admin/"},
            headers={"Referer": f"{base_url}/admin/login/"},
        )
        assert done.status_code == 302, (done.status_code, done.text[:500])
        assert "sessionid" in client.cookies, "no session cookie after login"
        return dict(client.cookies.items())


def wait_swap(base_url: str, token: str, swap_id: str, states: set[str], timeout: float = 90) -> dict[str, Any]:
    """Poll `GET /api/swap/{id}` until the swap is in one of `states`."""
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{base_url}/api/swap/{swap_id}", headers=bearer(token), timeout=5).json()
        if body["state"] in states:
            return body
        assert time.monotonic() < deadline, f"swap {swap_id} still {body['state']}"
        time.sleep(0.1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
