import hashlib

import pytest
from django.core.management import call_command

from accounts.models import APIToken
from accounts.tokens import apitoken_create, apitoken_revoke, apitoken_verify

pytestmark = pytest.mark.django_db


def test_only_the_hash_is_stored():
    token, plain = apitoken_create(name="cron", scope="operate")
    row = APIToken.objects.get(pk=token.pk)
    assert plain not in (row.token_hash, row.prefix, row.name)
    assert row.token_hash == hashlib.sha256(plain.encode()).hexdigest()
    assert apitoken_verify(plain=plain).pk == token.pk


def test_wrong_tokens_fail(monkeypatch):
    _, plain = apitoken_create(name="cron", scope="operate")
    calls = []
    import accounts.tokens as tokens

    real = tokens.hmac.compare_digest
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert apitoken_verify(plain=plain[:-1] + ("A" if plain[-1] != "A" else "B")) is None
    assert apitoken_verify(plain="sct_000000000000_nope") is None  # unknown prefix still compares
    assert apitoken_verify(plain="garbage") is None
    assert len(calls) == 2


def test_revoked_tokens_fail():
    _, plain = apitoken_create(name="cron", scope="operate")
    assert apitoken_revoke(name="cron")
    assert apitoken_verify(plain=plain) is None


def test_scopes_give_401_and_403(make_client, anon):
    assert anon.get("/api/models").status_code == 401
    bad = make_client(None)
    bad.token = "sct_deadbeef0000_wrong"
    assert bad.get("/api/models").status_code == 401
    reader = make_client("read")
    assert reader.get("/api/models").status_code == 200
    response = reader.post("/api/models", {"key": "x", "repo": "o/x"})
    assert response.status_code == 403 and "admin" in response.json()["detail"]
    inference = make_client("inference")
    assert inference.get("/api/models").status_code == 403


def test_command_prints_the_token_alone_on_its_last_line(capsys):
    call_command("apitoken", "create", "nightly", "--scope", "operate")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert apitoken_verify(plain=last).name == "nightly"
