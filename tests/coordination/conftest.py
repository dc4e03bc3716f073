"""Coordination fixtures: a movable server clock, a real HTTP receiver on loopback, scratch databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from coordination import clock as clock_module

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class FakeClock:
    """The server's clock, frozen at whole seconds and moved by hand."""

    def __init__(self) -> None:
        self.at = datetime(2026, 6, 17, 12, 0, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(clock_module, "now", fake.now)
    return fake


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 answering from a plan: status codes, or "hang" (sleep up to 30 s)."""

    url: str
    plan: list[int | str]
    requests: list[Received] = field(default_factory=list)
    got_request: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver got {len(self.requests)} request(s), expected {count}")
            time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="", plan=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Received(dict(self.headers.items()), body, time.monotonic()))
            state.got_request.set()
            action = state.plan.pop(0) if state.plan else 200
            if action == "hang":
                state.release.wait(30)
                return
            self.send_response(int(action))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


# --- scratch databases for scenarios that need several connections at once --------------------------------------------
# pytest-django's SQLite test database lives in memory (shared cache), where concurrent writers fail at once
# instead of waiting; the concurrency scenarios therefore run in a subprocess against the real settings: a
# file database in WAL mode with IMMEDIATE transactions, or a Postgres database of their own.


def run_python(env: dict[str, str], *args: str, timeout: float = 180, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def run_scenario(env: dict[str, str], name: str, **params: object) -> dict:
    """Run `tests/coordination/scenarios.py NAME` and return the JSON it prints on its last line."""
    result = run_python(env, "-m", "tests.coordination.scenarios", name, json.dumps(params))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _base_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SPARKCONTROL_DATA_DIR=str(data_dir), DATABASE_URL="", DJANGO_SETTINGS_MODULE="sparkcontrol.settings")
    return env


def _migrate(env: dict[str, str]) -> None:
    result = run_python(env, "manage.py", "migrate", "--no-input", "-v0")
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def sqlite_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = _base_env(tmp_path_factory.mktemp("sqlite-data"))
    _migrate(env)
    return env


@pytest.fixture(scope="module")
def postgres_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    name = f"sc_coord_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = _base_env(tmp_path_factory.mktemp("pg-data"))
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
    try:
        _migrate(env)
        yield env
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def scratch_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return request.getfixturevalue(f"{request.param}_env")
