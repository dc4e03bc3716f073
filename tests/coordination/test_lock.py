"""The swap lock over the API and the gate the swap engine calls (CONTRACT.md, "Swap lock")."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEntry
from coordination.models import SwapLock
from coordination.selectors import lock_status
from coordination.services import LockHeld, lock_acquire, lock_gate, lock_release
from realtime.broadcast import DASHBOARD_GROUP

pytestmark = pytest.mark.django_db

LOCK = "/api/swap/lock"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def acquire(client, holder: str = "nightly", ttl: int | None = 600, token: str | None = None):  # type: ignore[no-untyped-def]
    body: dict = {"holder": holder}
    if ttl is not None:
        body["ttl_seconds"] = ttl
    headers = {"X-Swap-Lock-Token": token} if token else None
    return client.post(LOCK, body, headers=headers)


# --- authentication ---------------------------------------------------------------------------------------------------


def test_lock_routes_need_credentials_and_the_operate_scope(anon, reader, operator):
    assert anon.get(LOCK).status_code == 401
    assert acquire(anon).status_code == 401
    assert anon.delete(LOCK).status_code == 401
    assert reader.get(LOCK).status_code == 200
    assert acquire(reader).status_code == 403
    assert reader.delete(LOCK).status_code == 403
    assert not SwapLock.objects.exclude(holder="").exists()
    assert acquire(operator).status_code == 201


# --- lifecycle --------------------------------------------------------------------------------------------------------


def test_acquire_grants_a_token_once_and_status_never_shows_it(operator, reader, clock):
    response = acquire(operator, ttl=600)
    assert response.status_code == 201, response.content
    grant = response.json()
    assert set(grant) == {"token", "holder", "acquired_at", "expires_at", "epoch"}
    assert grant["holder"] == "nightly" and grant["epoch"] == 1 and len(grant["token"]) >= 32
    assert when(grant["acquired_at"]) == clock.at
    assert (when(grant["expires_at"]) - clock.at).total_seconds() == 600

    clock.advance(100)
    status = reader.get(LOCK)
    assert status.status_code == 200
    assert status.json() == {
        "locked": True,
        "holder": "nightly",
        "acquired_at": grant["acquired_at"],
        "expires_at": grant["expires_at"],
        "remaining_s": 500.0,
        "epoch": 1,
        "forced": False,
    }
    assert grant["token"] not in status.content.decode()
    stored = SwapLock.objects.get()
    assert grant["token"] not in stored.token_hash and len(stored.token_hash) == 64


def test_default_ttl_is_900_seconds(operator, clock):
    grant = acquire(operator, ttl=None).json()
    assert (when(grant["expires_at"]) - clock.at).total_seconds() == 900


def test_a_held_lock_answers_423_with_holder_and_expiry(operator, make_client):
    grant = acquire(operator, holder="nightly").json()
    other = make_client("operate")
    response = acquire(other, holder="intruder")
    assert response.status_code == 423
    body = response.json()
    assert body["holder"] == "nightly" and body["expires_at"] == grant["expires_at"]
    assert "nightly" in body["detail"] and "token" not in body
    assert SwapLock.objects.get().holder == "nightly"


def test_a_wrong_token_on_a_held_lock_is_423_too(operator):
    acquire(operator)
    response = acquire(operator, holder="nightly", token="sclk_not-the-token")
    assert response.status_code == 423
    assert response.json()["holder"] == "nightly"


def test_reacquiring_with_the_token_extends_with_the_same_token_and_epoch(operator, clock):
    grant = acquire(operator, ttl=600).json()
    clock.advance(300)
    response = acquire(operator, ttl=1200, token=grant["token"])
    assert response.status_code == 200, response.content
    extended = response.json()
    assert extended["token"] == grant["token"] and extended["epoch"] == grant["epoch"] == 1
    assert extended["acquired_at"] == grant["acquired_at"]
    assert (when(extended["expires_at"]) - clock.at).total_seconds() == 1200


def test_an_expired_lock_is_free_and_the_next_grant_gets_a_new_epoch(operator, make_client, reader, clock):
    first = acquire(operator, ttl=60).json()
    clock.advance(59)
    assert reader.get(LOCK).json()["locked"] is True
    clock.advance(1)  # expires_at is exclusive: at expiry the lock is free
    status = reader.get(LOCK).json()
    assert status["locked"] is False and status["holder"] is None and status["remaining_s"] == 0
    assert status["epoch"] == 1

    second = acquire(make_client("operate"), holder="other").json()
    assert second["epoch"] == 2 and second["token"] != first["token"]
    # The old holder's token no longer extends anything: someone else holds the lock now.
    assert acquire(operator, token=first["token"]).status_code == 423


def test_an_old_token_after_expiry_gets_a_fresh_grant(operator, clock):
    first = acquire(operator, ttl=10).json()
    clock.advance(11)
    response = acquire(operator, ttl=10, token=first["token"])
    assert response.status_code == 201
    assert response.json()["epoch"] == 2 and response.json()["token"] != first["token"]


def test_release_with_the_token_frees_the_lock_and_keeps_the_epoch(operator, reader):
    grant = acquire(operator).json()
    response = operator.delete(LOCK, headers={"X-Swap-Lock-Token": grant["token"]})
    assert response.status_code == 204
    status = reader.get(LOCK).json()
    assert status["locked"] is False and status["epoch"] == 1 and status["forced"] is False
    assert acquire(operator).json()["epoch"] == 2


@pytest.mark.parametrize("headers", [None, {"X-Swap-Lock-Token": "sclk_wrong"}, {"X-Swap-Lock-Token": ""}])
def test_release_without_the_right_token_is_403_and_the_lock_stays(operator, reader, headers):
    acquire(operator)
    response = operator.delete(LOCK, headers=headers)
    assert response.status_code == 403
    assert "token" in response.json()["detail"]
    assert reader.get(LOCK).json()["locked"] is True


def test_releasing_a_free_lock_is_204(operator):
    assert operator.delete(LOCK).status_code == 204
    grant = acquire(operator).json()
    assert operator.delete(LOCK, headers={"X-Swap-Lock-Token": grant["token"]}).status_code == 204
    assert operator.delete(LOCK, headers={"X-Swap-Lock-Token": grant["token"]}).status_code == 204


# --- force ------------------------------------------------------------------------------------------------------------


def test_force_release_needs_the_admin_scope(operator, reader):
    acquire(operator)
    response = operator.delete(LOCK + "?force=true")
    assert response.status_code == 403
    assert reader.get(LOCK).json()["locked"] is True
    assert not AuditEntry.objects.filter(action="lock.force_release").exists()


def test_force_on_a_free_lock_still_needs_the_admin_scope(operator):
    assert operator.delete(LOCK + "?force=true").status_code == 403


def test_force_release_by_an_admin_token_is_204_audited_and_flagged(operator, admin_api, reader):
    acquire(operator, holder="nightly")
    response = admin_api.delete(LOCK + "?force=true")
    assert response.status_code == 204
    status = reader.get(LOCK).json()
    assert status["locked"] is False and status["forced"] is True and status["epoch"] == 1
    entry = AuditEntry.objects.get(action="lock.force_release")
    assert entry.actor.startswith("token:test-admin") and entry.detail["holder"] == "nightly"


def test_force_release_by_a_staff_session(operator, staff_client, reader):
    acquire(operator)
    response = staff_client.delete(LOCK + "?force=true")
    assert response.status_code == 204
    assert reader.get(LOCK).json()["locked"] is False
    assert AuditEntry.objects.get(action="lock.force_release").actor == "staff"


def test_a_new_grant_clears_the_forced_flag(operator, admin_api, reader):
    acquire(operator)
    admin_api.delete(LOCK + "?force=true")
    acquire(operator)
    assert reader.get(LOCK).json()["forced"] is False


# --- validation -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"holder": ""}, "holder"),
        ({"holder": "x" * 65}, "holder"),
        ({}, "holder"),
        ({"holder": "a", "ttl_seconds": 0}, "ttl_seconds"),
        ({"holder": "a", "ttl_seconds": 86401}, "ttl_seconds"),
        ({"holder": "a", "ttl_seconds": "soon"}, "ttl_seconds"),
        ({"holder": "a", "expires_at": "2030-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_bad_acquire_bodies_are_422_naming_the_field(operator, body, field):
    response = operator.post(LOCK, body)
    assert response.status_code == 422, response.content
    assert field in response.json()["detail"]
    assert not SwapLock.objects.exclude(holder="").exists()


def test_ttl_bounds_are_inclusive(operator, admin_api):
    assert acquire(operator, ttl=86400).status_code == 201
    assert admin_api.delete(LOCK + "?force=true").status_code == 204
    assert acquire(operator, ttl=1).status_code == 201


def test_malformed_json_is_4xx_not_500(operator):
    response = operator.post(LOCK, raw="{holder")
    assert 400 <= response.status_code < 500


# --- audit and pushes -------------------------------------------------------------------------------------------------


def test_every_grant_extend_release_and_force_is_audited_without_the_token(operator, admin_api):
    first = acquire(operator).json()
    acquire(operator, token=first["token"])
    operator.delete(LOCK, headers={"X-Swap-Lock-Token": first["token"]})
    second = acquire(operator).json()
    admin_api.delete(LOCK + "?force=true")
    actions = list(AuditEntry.objects.filter(target="swap-lock").order_by("id").values_list("action", flat=True))
    assert actions == ["lock.acquire", "lock.extend", "lock.release", "lock.acquire", "lock.force_release"]
    dumped = json.dumps(list(AuditEntry.objects.values()), default=str)
    assert first["token"] not in dumped and second["token"] not in dumped


def test_lock_changes_are_pushed_to_dashboards_after_commit(operator, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            grant = acquire(operator).json()
        message = json.loads(async_to_sync(layer.receive)(channel)["text"])
        assert message["kind"] == "lock" and message["locked"] is True and message["holder"] == "nightly"
        assert message["epoch"] == 1 and message["expires_at"] == grant["expires_at"]
        assert grant["token"] not in json.dumps(message)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert acquire(operator, holder="other").status_code == 423
        assert callbacks == []  # a refused acquire changes nothing and pushes nothing
    finally:
        async_to_sync(layer.group_discard)(DASHBOARD_GROUP, channel)


# --- the gate ---------------------------------------------------------------------------------------------------------


def gate(token: str | None = None, force: bool = False) -> int:
    with transaction.atomic():
        return lock_gate(token=token, force=force, actor="swapper")


def test_the_gate_passes_a_never_granted_lock_with_epoch_0():
    assert gate() == 0
    assert not SwapLock.objects.exists()  # the gate only reads


def test_the_gate_refuses_a_held_lock_without_its_token(clock):
    grant, _ = lock_acquire(holder="nightly", ttl_seconds=600, actor="t")
    with pytest.raises(LockHeld) as refused:
        gate()
    assert refused.value.holder == "nightly" and refused.value.expires_at == grant.expires_at
    with pytest.raises(LockHeld):
        gate(token="sclk_wrong")
    assert gate(token=grant.token) == grant.epoch == 1
    assert not AuditEntry.objects.filter(action="lock.force_swap").exists()


def test_the_gate_passes_once_the_lock_expires_or_is_released(clock):
    grant, _ = lock_acquire(holder="nightly", ttl_seconds=60, actor="t")
    clock.advance(60)
    assert gate() == 1
    grant, _ = lock_acquire(holder="nightly", ttl_seconds=60, actor="t")
    with pytest.raises(LockHeld):
        gate()
    call_command("lock", "release", "--token", grant.token, stdout=io.StringIO())
    assert gate() == 2


def test_a_forced_swap_passes_a_held_lock_is_audited_and_flagged():
    lock_acquire(holder="nightly", ttl_seconds=600, actor="t")
    assert gate(force=True) == 1
    entry = AuditEntry.objects.get(action="lock.force_swap")
    assert entry.actor == "swapper" and entry.detail["holder"] == "nightly"
    lock = SwapLock.objects.get()
    assert lock.forced is True and lock.holder == "nightly"  # forcing a swap does not release the lock


def test_force_with_a_free_lock_writes_no_audit_entry():
    assert gate(force=True) == 0
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)  # the test case's own transaction would hide the mistake
def test_the_gate_must_run_inside_the_swap_transaction():
    with pytest.raises(TransactionManagementError):
        lock_gate(token=None, force=False, actor="swapper")


@pytest.mark.parametrize("held", [False, True])
def test_the_gate_reads_the_lock_row_exactly_once(held):
    token = lock_acquire(holder="nightly", ttl_seconds=600, actor="t")[0].token if held else None
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        lock_gate(token=token, force=False, actor="swapper")
    touching = [q["sql"] for q in queries.captured_queries if "coordination_swaplock" in q["sql"]]
    assert len(touching) == 1 and touching[0].lstrip().upper().startswith("SELECT"), touching
    if connection.features.has_select_for_update:
        assert "FOR UPDATE" in touching[0]


def test_a_refused_gate_rolls_back_the_swap_transaction():
    lock_acquire(holder="nightly", ttl_seconds=600, actor="t")
    before = AuditEntry.objects.count()
    with pytest.raises(LockHeld), transaction.atomic():
        AuditEntry.objects.create(actor="swapper", action="swap.request")  # stands in for the swap row
        lock_gate(token=None, force=False, actor="swapper")
    assert AuditEntry.objects.count() == before


# --- manage.py lock ---------------------------------------------------------------------------------------------------


def run(*args: str, stdin: str | None = None, monkeypatch=None) -> list[str]:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    call_command("lock", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_lock_command_acquire_prints_the_token_last_and_it_works(monkeypatch):
    lines = run("acquire", "cron-box", "--ttl", "120")
    token = lines[-1]
    assert "epoch 1" in lines[0] and "cron-box" in lines[0]
    assert dict(line.split(": ", 1) for line in run("status"))["holder"] == "cron-box"
    with pytest.raises(CommandError, match="cron-box"):
        run("acquire", "someone-else")
    assert "extended" in run("acquire", "cron-box", "--token", "-", stdin=token + "\n", monkeypatch=monkeypatch)[0]
    with pytest.raises(CommandError, match="token"):
        run("release", "--token", "sclk_wrong")
    assert run("release", "--token", token) == ["released"]
    assert dict(line.split(": ", 1) for line in run("status"))["locked"] == "False"


def test_lock_command_force_release():
    lock_acquire(holder="nightly", ttl_seconds=600, actor="t")
    assert run("force-release") == ["force-released"]
    assert run("force-release") == ["the lock was not held"]
    assert AuditEntry.objects.filter(action="lock.force_release", actor="manage.py").count() == 1


# --- admin ------------------------------------------------------------------------------------------------------------


def test_admin_shows_the_lock_without_its_token_and_can_force_release_it(staff_client):
    grant, _ = lock_acquire(holder="nightly", ttl_seconds=600, actor="t")
    listing = staff_client.get("/admin/coordination/swaplock/")
    assert listing.status_code == 200 and "nightly" in listing.content.decode()
    page = staff_client.get("/admin/coordination/swaplock/1/change/")
    assert page.status_code == 200
    assert grant.token not in page.content.decode() and SwapLock.objects.get().token_hash not in page.content.decode()
    response = staff_client.post(
        "/admin/coordination/swaplock/", {"action": "force_release", "_selected_action": [1]}, follow=True
    )
    assert response.status_code == 200 and "Lock released" in response.content.decode()
    lock = SwapLock.objects.get()
    assert lock.holder == "" and lock.forced is True and lock.epoch == 1
    assert AuditEntry.objects.get(action="lock.force_release").actor == "staff"


def _orm_fields(lock: SwapLock | None) -> dict | None:
    return None if lock is None else {f.attname: getattr(lock, f.attname) for f in SwapLock._meta.concrete_fields}


def test_the_compiled_lock_read_matches_the_orm():
    """`lock_status` reads the row through SQL compiled once: every field (datetimes, booleans) as the ORM gives it,
    before the first grant, while held and after a forced release."""
    from coordination.selectors import _lock_read

    assert _lock_read.read() is None and _orm_fields(SwapLock.objects.first()) is None
    lock_acquire(holder="compiled-read", ttl_seconds=60, actor="test")
    assert _orm_fields(_lock_read.read()) == _orm_fields(SwapLock.objects.get())
    assert lock_status()["holder"] == "compiled-read" and lock_status()["remaining_s"] > 59
    lock_release(token=None, force=True, actor="test")
    released = _lock_read.read()
    assert _orm_fields(released) == _orm_fields(SwapLock.objects.get()) and released.forced is True
    with transaction.atomic():
        assert _orm_fields(_lock_read.read(for_update=True)) == _orm_fields(released)
