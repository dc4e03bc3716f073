"""Both sign-in pages are throttled (django-axes): after a few wrong passwords for one user from one address, the
right password is refused too; the lockout is audited once and shown in the admin; other users are unaffected."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audit.models import AuditEntry

FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the throttle is under test, not the hashing
PAGES = ["/login/", "/admin/login/"]


@pytest.fixture
def staff(db, settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = FAST_HASHER
    return get_user_model().objects.create_user("ops", password="right-password-1", is_staff=True, is_superuser=True)


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("page", PAGES)
def test_many_wrong_passwords_then_the_right_one_is_refused(staff, page: str) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    assert Client().post(page, {"username": "ops", "password": "right-password-1"}).status_code == 302
    for attempt in range(40):
        response = client.post(page, {"username": "ops", "password": f"wrong-{attempt}"})
        assert not _signed_in(client)
    response = client.post(page, {"username": "ops", "password": "right-password-1"})
    assert response.status_code == 429, response.status_code
    assert not _signed_in(client)
    assert b"Too many attempts" in response.content
    entries = AuditEntry.objects.filter(action="login.locked_out")
    assert entries.count() == 1, list(entries.values())
    assert entries.get().target == "ops" and entries.get().detail["path"] == page


def test_a_lockout_is_per_user_and_address_and_visible_in_the_admin(staff) -> None:  # type: ignore[no-untyped-def]
    get_user_model().objects.create_user("other", password="other-password-1")
    attacker = Client(REMOTE_ADDR="10.9.8.7")
    for attempt in range(6):
        attacker.post("/login/", {"username": "other", "password": f"wrong-{attempt}"})
    assert attacker.post("/login/", {"username": "other", "password": "other-password-1"}).status_code == 429
    # The same user from another address, and another user from the attacker's, still sign in.
    assert Client(REMOTE_ADDR="10.0.0.2").post("/login/", {"username": "other", "password": "other-password-1"})
    elsewhere = Client(REMOTE_ADDR="10.0.0.2")
    elsewhere.post("/login/", {"username": "other", "password": "other-password-1"})
    assert _signed_in(elsewhere)
    admin = Client(REMOTE_ADDR="10.9.8.7")
    admin.post("/admin/login/", {"username": "ops", "password": "right-password-1"})
    assert _signed_in(admin)
    page = admin.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and b"10.9.8.7" in page.content and b"other" in page.content
