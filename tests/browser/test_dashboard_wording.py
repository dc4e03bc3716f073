"""What the dashboard and the admin say, read in a real browser: the head vLLM when nothing is meant to run or a model
loads, the swap dialog, the order of the last log lines, a quick failure's duration, the admin's service URLs and
its icon."""

from __future__ import annotations

import pytest

from tests.browser.conftest import open_page
from tests.browser.harness import ADMIN_PASSWORD, ADMIN_USER
from tests.browser.ui import wait_swap_state

pytestmark = pytest.mark.integration

NOTHING_SERVED = """
from swaps.services import serving_clear
from cluster.sweeps import sweep_status
serving_clear(reason="test: nothing is meant to be served")
sweep_status(timeout=3)
"""


def test_the_head_vllm_is_idle_when_nothing_is_served_and_loading_during_a_swap(browser, clean):
    clean.sim.stop_containers()
    clean.run(NOTHING_SERVED)
    assert {e["key"]: e["probe"]["status"] for e in clean.api("GET", "/endpoints").json()}["vllm"] == "down"
    watched = open_page(browser, clean)
    page = watched.page
    try:
        assert page.locator("#now-serving .serving-vllm .status").inner_text() == "idle"
        assert page.get_attribute("#services .tile[data-service=vllm]", "data-status") == "idle"
        clean.sim.set_load_seconds(4.0)
        swap = clean.swap_start("tiny")
        page.wait_for_function("() => document.querySelector('#swap-state')?.dataset.state === 'loading'")
        assert page.locator("#now-serving .serving-vllm .status").inner_text() == "loading"
        assert page.get_attribute("#services .tile[data-service=vllm]", "data-status") == "loading"
        clean.swap_wait(swap["id"])
    finally:
        watched.context.close()
    assert not watched.errors, watched.errors


def test_the_swap_dialog_says_the_gateway_holds_requests(dashboard, clean):
    page = dashboard.page
    page.click("li.model[data-key='tiny'] button[data-action=swap]")
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    text = dialog.inner_text()
    assert "fail until" not in text
    assert "wait until the swap is ready" in text
    page.click("#confirm-dialog button:not(#confirm-ok)")


LINES_AFTER_READY = """
from swaps.models import EventKind, Swap
from swaps.services import swap_events_append
swap = Swap.objects.get(pk=%r)
swap_events_append(swap=swap, items=[(EventKind.LOG, "late start-up line 1"), (EventKind.LOG, "late start-up line 2")])
"""


def test_ready_is_the_last_line_of_the_log_even_when_start_up_lines_come_after_it(browser, clean):
    swap = clean.swap_wait(clean.swap_start("tiny")["id"])
    assert swap["state"] == "ready"
    clean.run(LINES_AFTER_READY % swap["id"])
    events = clean.events(swap["id"])
    assert events[-1]["message"] == "late start-up line 2"  # recorded after "ready"
    watched = open_page(browser, clean)
    page = watched.page
    try:
        wait_swap_state(page, "ready")
        page.wait_for_function("() => document.querySelectorAll('#swap-log li').length >= 3")
        page.wait_for_timeout(300)
        shown = page.eval_on_selector_all("#swap-log li .ev-msg", "items => items.map(el => el.textContent)")
        assert shown[-1].startswith("ready"), shown[-4:]
        assert shown[-3:-1] == ["late start-up line 1", "late start-up line 2"], shown[-4:]
        page.goto(f"/swaps/{swap['id']}/")
        shown = page.eval_on_selector_all("#swap-log li .ev-msg", "items => items.map(el => el.textContent)")
        assert shown[-1].startswith("ready"), shown[-4:]
        assert shown[-3:-1] == ["late start-up line 1", "late start-up line 2"], shown[-4:]
    finally:
        watched.context.close()
    assert not watched.errors, watched.errors


QUICK_FAILURE = """
from datetime import timedelta
from django.utils import timezone
from swaps.models import Swap
now = timezone.now()
Swap.objects.create(
    model_key="tiny", state="failed", error="pre-flight: refused at once", requested_by="test", active=None,
    started_at=now, finished_at=now + timedelta(milliseconds=20),
)
"""


def test_a_pre_flight_refused_at_once_does_not_say_it_took_no_time(browser, clean):
    clean.run(QUICK_FAILURE)
    watched = open_page(browser, clean)
    page = watched.page
    try:
        wait_swap_state(page, "failed")
        meta = page.locator("#active-swap .swap-meta").inner_text()
        assert "took 20 ms" in meta, meta
    finally:
        watched.context.close()
    assert not watched.errors, watched.errors


def test_the_admin_lists_effective_service_urls_and_names_its_icon(browser, clean):
    context = browser.new_context(base_url=clean.url)
    page = context.new_page()
    missing: list[str] = []
    page.on("response", lambda response: missing.append(response.url) if response.status == 404 else None)
    try:
        page.goto("/admin/login/")
        page.fill("input[name=username]", ADMIN_USER)
        page.fill("input[name=password]", ADMIN_PASSWORD)
        page.click("input[type=submit]")
        page.goto("/admin/cluster/service/")
        page.wait_for_load_state("networkidle")
        assert not missing, missing
        vllm_port = clean.sim.vllm_port
        row = page.locator("#result_list tr", has_text="vllm").first.inner_text()
        assert f":{vllm_port}" in row, row
        assert page.locator("link[rel=icon]").count() == 1
    finally:
        context.close()
