"""The swap lock on the dashboard: the banner follows the API live, staff can force-release it, and a swap refused
with 423 says who holds the lock and offers staff a forced swap."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import open_page
from tests.browser.harness import OPERATOR_PASSWORD, OPERATOR_USER
from tests.browser.ui import click_swap, shown_swap, wait_new_swap, wait_swap_state

pytestmark = pytest.mark.integration


def countdown_seconds(text: str) -> int:
    parts = [int(part) for part in re.fullmatch(r"(?:(\d+):)?(\d\d):(\d\d)", text).groups(default="0")]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def acquire(server, holder: str, ttl: int = 600) -> dict:
    response = server.api("POST", "/swap/lock", json={"holder": holder, "ttl_seconds": ttl})
    assert response.status_code == 201, response.text
    return response.json()


def test_the_banner_appears_when_automation_takes_the_lock_and_goes_on_force_release(dashboard, clean):
    page = dashboard.page
    banner = page.locator("#lock-banner")
    assert banner.is_hidden()
    page.evaluate("window.__notReloaded = true")

    grant = acquire(clean, "nightly-eval", ttl=600)
    banner.wait_for(state="visible")
    assert banner.locator(".holder").inner_text() == "nightly-eval"
    assert banner.locator(".epoch").inner_text() == str(grant["epoch"])
    first = countdown_seconds(banner.locator(".countdown").inner_text())
    assert 590 <= first <= 600
    time.sleep(3.2)  # the countdown ticks every second
    assert countdown_seconds(banner.locator(".countdown").inner_text()) <= first - 2

    page.click("#force-release")
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    assert "nightly-eval" in dialog.inner_text()
    page.click("#confirm-ok")
    banner.wait_for(state="hidden")
    lock = clean.api("GET", "/swap/lock").json()
    assert lock["locked"] is False and lock["forced"] is True
    assert page.evaluate("window.__notReloaded") is True


def test_the_banner_goes_when_the_holder_releases_and_when_the_lock_expires(dashboard, clean):
    page = dashboard.page
    banner = page.locator("#lock-banner")
    grant = acquire(clean, "cron-a", ttl=600)
    banner.wait_for(state="visible")
    released = clean.api("DELETE", "/swap/lock", headers={"X-Swap-Lock-Token": grant["token"]})
    assert released.status_code == 204
    banner.wait_for(state="hidden")

    acquire(clean, "cron-b", ttl=3)
    banner.wait_for(state="visible")
    banner.wait_for(state="hidden", timeout=8_000)  # no message comes when a lock expires: the countdown ends it
    assert clean.api("GET", "/swap/lock").json()["locked"] is False


def test_a_refused_swap_names_the_holder_and_staff_can_force_it(dashboard, clean):
    page = dashboard.page
    acquire(clean, "batch-runner", ttl=900)
    page.locator("#lock-banner").wait_for(state="visible")

    click_swap(page, "tiny")
    refusal = page.locator("#catalog-notice")
    refusal.locator("#force-swap").wait_for()
    assert "refused" in refusal.inner_text() and refusal.locator(".holder").inner_text() == "batch-runner"
    assert clean.api("GET", "/status").json()["active_swap"] is None  # nothing started

    page.click("#force-swap")
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    text = dialog.inner_text()
    assert "batch-runner" in text and "tiny" in text
    previous = shown_swap(page)
    page.click("#confirm-ok")
    swap_id = wait_new_swap(page, previous)
    wait_swap_state(page, "ready")
    swap = clean.api("GET", f"/swap/{swap_id}").json()
    assert swap["forced"] is True and swap["state"] == "ready"
    assert "forced" in page.locator("#active-swap .swap-title").inner_text()
    assert page.locator("#lock-banner").is_visible()  # forcing a swap does not release the lock
    assert clean.api("GET", "/swap/lock").json()["locked"] is True


def test_a_non_staff_user_sees_the_lock_but_cannot_force(browser, clean):
    watched = open_page(browser, clean, user=OPERATOR_USER, password=OPERATOR_PASSWORD)
    page = watched.page
    try:
        acquire(clean, "someone-else", ttl=900)
        banner = page.locator("#lock-banner")
        banner.wait_for(state="visible")
        assert page.locator("#force-release").count() == 0

        click_swap(page, "tiny")
        refusal = page.locator("#catalog-notice .notice")
        refusal.wait_for()
        assert "someone-else" in refusal.inner_text() and "ask a staff user" in refusal.inner_text()
        assert page.locator("#force-swap").count() == 0
        assert clean.api("GET", "/status").json()["active_swap"] is None
        assert not watched.errors
    finally:
        watched.context.close()
