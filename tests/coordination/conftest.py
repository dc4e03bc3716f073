"""Coordination fixtures: a movable server clock, a real HTTP receiver on loopback, scratch databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from coordination import clock as clock_module
from tests.coordination.receiver import Receiver, serve_receiver
from tests.coordination.scratch import base_env, migrate

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


@pytest.fixture(autouse=True)
def webhooks_to_loopback(settings) -> None:  # type: ignore[no-untyped-def]
    """The test receiver listens on 127.0.0.1, which webhooks may reach only when private targets are allowed."""
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "WEBHOOK_ALLOW_PRIVATE": True}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as state:
        yield state


# --- scratch databases for scenarios that need several connections at once --------------------------------------------


@pytest.fixture(scope="session")
def sqlite_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = base_env(tmp_path_factory.mktemp("sqlite-data"))
    migrate(env)
    return env


@pytest.fixture(scope="session")
def postgres_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    name = f"sc_coord_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = base_env(tmp_path_factory.mktemp("pg-data"))
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
    try:
        migrate(env)
        yield env
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def scratch_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return request.getfixturevalue(f"{request.param}_env")
