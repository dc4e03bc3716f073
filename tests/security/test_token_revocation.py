"""API tokens: a revocation takes effect at once on /v1 (whose verified tokens are cached) in this process and in
others (another process revoking; Redis shared by scaled-out processes); expiry; why a token was refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.auth import verified_tokens
from accounts.models import APIToken
from accounts.tokens import EPOCH_KEY, apitoken_create, apitoken_revoke, token_epoch

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/14"


def _models(token: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = Client().get("/v1/models", headers=headers)
    return response.status_code, response.json()


def _cached(token: str) -> None:
    assert _models(token)[0] == 200
    assert _models(token)[0] == 200
    assert len(verified_tokens), "the gateway did not cache the verified token"


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py` in a process of its own, on this test's database."""
    database = connection.settings_dict["NAME"]
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", **env}
    environment.setdefault("SPARKCONTROL_DATA_DIR", str(django_settings.DATA_DIR))
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(autouse=True)
def empty_cache():  # type: ignore[no-untyped-def]
    verified_tokens.clear()
    yield
    verified_tokens.clear()


def test_a_revoked_token_is_refused_at_once_by_the_process_that_cached_it():
    token, plain = apitoken_create(name="app", scope="inference")
    _cached(plain)
    assert apitoken_revoke(name="app")
    status, body = _models(plain)
    assert status == 401 and body["error"]["message"] == "token revoked"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the embedded default's cross-process path is SQLite's")
def test_a_revocation_by_another_process_is_seen_at_once():
    _, plain = apitoken_create(name="app", scope="inference")
    _cached(plain)
    done = _manage("apitoken", "revoke", "app")
    assert done.returncode == 0, done.stderr
    assert _models(plain)[0] == 401


def test_with_redis_a_revocation_elsewhere_reaches_every_process(settings, tmp_path):
    server = redis.Redis.from_url(REDIS_URL)
    server.delete(EPOCH_KEY)
    settings.REDIS_URL = REDIS_URL
    _, plain = apitoken_create(name="app", scope="inference")
    _cached(plain)
    before = token_epoch()
    server.incr(EPOCH_KEY)  # what another web process's revocation does
    assert token_epoch() != before
    assert verified_tokens.get(f"Bearer {plain}", token_epoch()) is None
    if connection.vendor == "sqlite":
        # A revoking process on another machine: shares Redis and the database, not the data directory.
        done = _manage("apitoken", "revoke", "app", REDIS_URL=REDIS_URL, SPARKCONTROL_DATA_DIR=str(tmp_path))
        assert done.returncode == 0, done.stderr
    else:
        apitoken_revoke(name="app")
    assert _models(plain)[0] == 401
    server.delete(EPOCH_KEY)


def test_redis_unreachable_means_no_cache_not_a_stale_one(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    _, plain = apitoken_create(name="app", scope="inference")
    assert _models(plain)[0] == 200
    APIToken.objects.filter(name="app").update(revoked=True)  # even without anyone bumping the epoch
    assert _models(plain)[0] == 401


def test_an_expired_token_says_so_on_the_api_and_the_gateway():
    _, plain = apitoken_create(name="old", scope="operate", expires_at=timezone.now() - timedelta(seconds=1))
    status, body = _models(plain)
    assert status == 401 and body["error"]["message"] == "token expired"
    response = Client().get("/api/status", headers={"Authorization": f"Bearer {plain}"})
    assert response.status_code == 401 and response.json()["detail"] == "token expired"


def test_a_cached_token_stops_at_its_expiry():
    _, plain = apitoken_create(name="brief", scope="inference", expires_at=timezone.now() + timedelta(seconds=0.4))
    _cached(plain)
    time.sleep(0.5)
    status, body = _models(plain)
    assert status == 401 and body["error"]["message"] == "token expired"


def test_no_token_and_a_wrong_token_get_different_messages():
    status, body = _models(None)
    assert status == 401 and body["error"]["message"].startswith("authentication required")
    status, body = _models("sct_0123456789ab_not-a-real-token")
    assert status == 401 and body["error"]["message"] == "token not recognised"
    assert body["error"]["code"] == "invalid_api_key"
    api = Client().get("/api/status")
    assert api.status_code == 401 and api.json()["detail"].startswith("authentication required")
    api = Client().get("/api/status", headers={"Authorization": "Bearer sct_0123456789ab_nope"})
    assert api.status_code == 401 and api.json()["detail"] == "token not recognised"


def test_apitoken_create_expires_in():
    call_command("apitoken", "create", "cron", "--scope", "operate", "--expires-in", "30d")
    expires = APIToken.objects.get(name="cron").expires_at
    assert abs((expires - timezone.now()) - timedelta(days=30)) < timedelta(minutes=1)
    with pytest.raises(CommandError, match="expires-in"):
        call_command("apitoken", "create", "bad", "--expires-in", "30x")


def _lock(token: str) -> int:
    return Client().get("/api/swap/lock", headers={"Authorization": f"Bearer {token}"}).status_code


def test_the_api_caches_a_verified_token_and_still_refuses_it_at_once_when_revoked():
    _, plain = apitoken_create(name="cron", scope="read")
    assert _lock(plain) == 200
    assert verified_tokens.get(f"Bearer {plain}", token_epoch()) is not None, "the API did not cache the token"
    assert apitoken_revoke(name="cron")
    assert _lock(plain) == 401


def test_a_cached_token_is_refused_once_it_expires():
    _, plain = apitoken_create(name="short", scope="read", expires_at=timezone.now() + timedelta(seconds=1))
    assert _lock(plain) == 200
    time.sleep(1.2)
    assert _lock(plain) == 401
