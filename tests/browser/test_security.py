"""Values from outside are text, never markup, and the Content-Security-Policy forbids inline scripts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.browser.conftest import open_page
from tests.browser.ui import click_swap, rendered_messages, shown_swap, wait_new_swap, wait_swap_state

pytestmark = pytest.mark.integration

PAYLOAD = "<img src=x onerror=alert(1)>"
# A served model name may hold no whitespace (it is one argv word and an API model id): markup that needs none.
SERVED_PAYLOAD = "<img/src=x/onerror=alert(1)>"
NO_ELEMENTS_FROM_DATA = "() => document.querySelectorAll('img, [onerror]').length"


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def test_a_model_name_holder_log_line_and_job_with_markup_render_as_text_and_run_nothing(browser, clean):
    created = clean.api(
        "POST",
        "/models",
        token=clean.admin_token,
        json={"key": "xss", "name": f"{PAYLOAD} model", "repo": "sim/tiny-model", "served_model_name": SERVED_PAYLOAD},
    )
    assert created.status_code in (201, 409), created.text  # 409: an earlier run of this test in the session
    job = {
        "id": "xss-job",
        "name": PAYLOAD,
        "owner": PAYLOAD,
        "schedule": PAYLOAD,
        "description": PAYLOAD,
        "next_run": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    assert clean.api("POST", "/schedule", json=job).status_code == 201
    watched = open_page(browser, clean)
    page = watched.page
    try:
        assert page.locator("li.model[data-key=xss] .model-name").inner_text() == f"{PAYLOAD} model"
        row = page.locator("#schedule tr[data-job=xss-job]")
        assert row.locator(".job-name").inner_text() == PAYLOAD

        # A log line from vLLM naming the served model (`non-default args: {... 'served_model_name': [...]}`).
        previous = shown_swap(page)
        click_swap(page, "xss")
        swap_id = wait_new_swap(page, previous)
        wait_swap_state(page, "ready")
        lines = [line for line in rendered_messages(page) if SERVED_PAYLOAD in line]
        assert lines, "no log line carried the served model name"
        assert any(SERVED_PAYLOAD in event["message"] for event in clean.events(swap_id))

        # The lock holder, in the banner, in the 423 explanation and in the forced-swap confirmation.
        assert clean.api("POST", "/swap/lock", json={"holder": PAYLOAD, "ttl_seconds": 600}).status_code == 201
        banner = page.locator("#lock-banner")
        banner.wait_for(state="visible")
        assert banner.locator(".holder").inner_text() == PAYLOAD
        click_swap(page, "xss")
        page.locator("#force-swap").wait_for()
        assert page.locator("#catalog-notice .holder").inner_text() == PAYLOAD
        page.click("#force-swap")
        dialog = page.locator("#confirm-dialog")
        dialog.wait_for(state="visible")
        assert PAYLOAD in dialog.inner_text()
        page.click("#confirm-dialog button[value=cancel]")
        page.click("#force-release")
        assert PAYLOAD in dialog.inner_text()
        page.click("#confirm-dialog button[value=cancel]")

        assert page.evaluate(NO_ELEMENTS_FROM_DATA) == 0
        assert watched.dialogs == [], f"a script ran: {watched.dialogs}"

        # The swap's own page renders its log the same way.
        page.goto(f"/swaps/{swap_id}/")
        assert any(SERVED_PAYLOAD in text for text in page.locator("#swap-log .ev-msg").all_inner_texts())
        assert page.evaluate(NO_ELEMENTS_FROM_DATA) == 0
        assert watched.dialogs == [] and not watched.errors
    finally:
        watched.context.close()


def test_the_content_security_policy_allows_no_inline_script(browser, clean):
    watched = open_page(browser, clean)
    page = watched.page
    try:
        response = page.goto("/")
        header = response.headers["content-security-policy"]
        directives = csp_directives(header)
        assert directives["script-src"] == ["'self'"], header
        assert "'unsafe-inline'" not in header and "'unsafe-eval'" not in header
        host = clean.url.removeprefix("http://")
        assert {"'self'", f"ws://{host}", f"wss://{host}"} <= set(directives["connect-src"])
        assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]
        page.wait_for_selector("#connection[data-state=live]")  # the page itself works under its policy

        # The browser enforces it: an inline script injected into the page does not run.
        page.evaluate(
            """() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
                       document.head.append(s); }"""
        )
        page.wait_for_timeout(200)
        assert page.evaluate("window.__inline") is None
        assert watched.csp_violations(), "the blocked inline script should have been reported"
        assert not watched.errors
    finally:
        watched.context.close()

    for path in ("/login/", "/api/health", "/admin/login/"):
        header = httpx.get(f"{clean.url}{path}").headers["content-security-policy"]
        assert csp_directives(header)["script-src"] == ["'self'"], (path, header)


def test_the_websocket_refuses_anonymous_clients(browser, clean):
    context = browser.new_context(base_url=clean.url)
    page = context.new_page()
    try:
        page.goto("/login/")
        code = page.evaluate(
            """() => new Promise(resolve => {
                 const ws = new WebSocket(`ws://${location.host}/ws/swaps/`);
                 ws.onclose = event => resolve(event.code);
               })"""
        )
        assert code in (4401, 1006), code
    finally:
        context.close()


def test_the_admin_works_under_the_policy(browser, clean):
    watched = open_page(browser, clean)
    try:
        for path in ("/admin/", "/admin/catalog/modelentry/", "/admin/catalog/modelentry/add/", "/admin/swaps/swap/"):
            watched.page.goto(path)
            watched.page.wait_for_load_state("load")
        assert watched.csp_violations() == [] and watched.errors == []
    finally:
        watched.context.close()
