"""The dashboard in a real browser against the running service and sparksim: sign-in, a live swap, the catalog,
service tiles, scheduled jobs and history."""

from __future__ import annotations

import math
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.browser.conftest import DISABLED, open_page
from tests.browser.harness import ADMIN_USER
from tests.browser.ui import (
    click_swap,
    rendered_seqs,
    shown_swap,
    step_statuses,
    wait_log_matches,
    wait_new_swap,
    wait_swap_state,
)

pytestmark = pytest.mark.integration

STEPS = ["preflight", "stopping", "launching", "loading", "ready"]

# Records every step the stepper marks as current, in order, from inside the page.
WATCH_STEPPER = """() => {
  window.__steps = [];
  const record = () => {
    const current = document.querySelector('#active-swap .step[data-status=current]');
    const name = current ? current.dataset.step : null;
    if (name && window.__steps[window.__steps.length - 1] !== name) window.__steps.push(name);
  };
  const stepper = document.querySelector('#active-swap .stepper');
  new MutationObserver(record).observe(stepper, {childList: true, subtree: true});
  window.__notReloaded = true;
}"""


def test_sign_in_is_required_and_sign_out_ends_the_session(browser, clean):
    context = browser.new_context(base_url=clean.url)
    page = context.new_page()
    try:
        page.goto("/")
        assert "/login/?next=/" in page.url
        page.fill("input[name=username]", ADMIN_USER)
        page.fill("input[name=password]", "not-the-password")
        page.click("button[type=submit]")
        assert "/login/" in page.url
        assert "correct username and password" in page.locator(".notice-error").inner_text()

        watched = open_page(browser, clean)
        assert watched.page.locator(".who").inner_text() == ADMIN_USER
        watched.page.click("text=Sign out")
        watched.page.wait_for_url("**/login/")
        watched.page.goto("/")
        assert "/login/" in watched.page.url
        watched.context.close()
    finally:
        context.close()


def test_a_swap_moves_the_stepper_streams_the_log_and_shows_ready_without_reload(dashboard, clean, artifacts):
    page = dashboard.page
    clean.sim.set_load_seconds(3.0)
    page.evaluate(WATCH_STEPPER)

    previous = shown_swap(page)
    click_swap(page, "tiny")
    swap_id = wait_new_swap(page, previous)
    page.wait_for_function(
        """() => document.querySelector('#active-swap .step[data-step=loading]')?.dataset.status === 'current'
                 && document.querySelectorAll('#swap-log li.ev-log').length >= 3"""
    )
    # Mid-swap: log lines from the container have arrived while the swap is still loading.
    assert page.get_attribute("#swap-state", "data-state") == "loading"
    statuses = step_statuses(page)
    assert [statuses[step] for step in STEPS] == ["done", "done", "done", "current", "todo"]
    assert page.locator("li.model button[data-action=swap]").first.is_disabled()  # one swap at a time
    shot = artifacts / "dashboard-during-swap.png"
    page.screenshot(path=str(shot))
    target = os.environ.get("DASHBOARD_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)

    wait_swap_state(page, "ready")
    assert set(step_statuses(page).values()) == {"done"}
    seen = page.evaluate("window.__steps")
    assert "loading" in seen and len(seen) >= 2, seen
    assert seen == sorted(seen, key=STEPS.index), f"the stepper went backwards: {seen}"
    assert page.evaluate("window.__notReloaded") is True
    assert shown_swap(page) == swap_id

    wait_log_matches(page, clean, swap_id)
    assert page.locator("#now-serving .serving-key").inner_text() == "tiny"
    assert page.locator("li.model[data-key=tiny] .badge-ok").inner_text() == "serving"
    first = page.locator(f"#history tr[data-swap='{swap_id}']")
    assert first.locator(".badge").first.inner_text() == "ready"
    swap = clean.api("GET", f"/swap/{swap_id}").json()
    assert swap["state"] == "ready" and swap["requested_by"] == ADMIN_USER


def test_validate_shows_the_checks_and_commands(dashboard, clean):
    page = dashboard.page
    page.click("li.model[data-key=local-llama] button[data-action=validate]")
    panel = page.locator("li.model[data-key=local-llama] .validation")
    panel.wait_for()
    expected = clean.api("POST", "/swap/local-llama/validate").json()
    names = panel.locator(".check-name").all_inner_texts()
    assert names == [check["name"] for check in expected["checks"]]
    assert "Pre-flight passed" in panel.inner_text()
    commands = panel.locator("pre.commands").inner_text()
    assert "launch-cluster.sh" in commands and "/models/local-llama" in commands
    assert page.locator("li.model[data-key=local-llama] .badge-local").inner_text() == "local"


def test_the_catalog_lists_enabled_models_only(dashboard, clean):
    keys = dashboard.page.eval_on_selector_all("li.model", "items => items.map(li => li.dataset.key)")
    enabled = [model["key"] for model in clean.api("GET", "/models").json() if model["enabled"]]
    assert keys == enabled and "retired" not in keys


def test_cancel_stops_a_running_swap(dashboard, clean):
    page = dashboard.page
    clean.sim.set_load_seconds(30.0)
    previous = shown_swap(page)
    click_swap(page, "small")
    swap_id = wait_new_swap(page, previous)
    page.wait_for_function(
        "() => document.querySelector('#active-swap .step[data-step=loading]')?.dataset.status === 'current'"
    )
    page.click("#cancel-swap")
    page.locator("#confirm-dialog").wait_for(state="visible")
    page.click("#confirm-ok")
    wait_swap_state(page, "cancelled")
    assert step_statuses(page)["loading"] == "failed"
    assert page.locator("#cancel-swap").count() == 0
    swap = clean.api("GET", f"/swap/{swap_id}").json()
    assert swap["state"] == "cancelled"


def test_history_links_to_the_swap_log(dashboard, clean):
    page = dashboard.page
    swap = clean.swap_start("tiny")  # started by automation: the page learns of it from the websocket
    row = page.locator(f"#history tr[data-swap='{swap['id']}']")
    row.wait_for()
    clean.swap_wait(swap["id"])
    page.wait_for_function(
        f"() => document.querySelector(\"#history tr[data-swap='{swap['id']}'] .badge\")?.textContent === 'ready'"
    )
    assert row.locator("td").nth(3).inner_text() != "–"  # a duration
    row.locator("a", has_text="log").click()
    page.wait_for_url(f"**/swaps/{swap['id']}/")
    wait_log_matches(page, clean, swap["id"])  # the detail page marks its lines the same way
    assert "ready" in page.locator("h1 .badge").first.inner_text()


def test_service_tiles_one_per_enabled_service_with_status_latency_and_last_check(dashboard, clean):
    page = dashboard.page
    endpoints = clean.api("GET", "/endpoints").json()
    assert {e["key"] for e in endpoints if e["disabled"]} == {DISABLED}
    tiles = page.eval_on_selector_all("#services .tile", "tiles => tiles.map(t => t.dataset.service)")
    assert sorted(tiles) == sorted(e["key"] for e in endpoints if not e["disabled"])
    assert page.locator(f"#services .tile[data-service='{DISABLED}']").count() == 0

    clean.swap_wait(clean.swap_start("tiny")["id"])
    clean.run("from cluster.sweeps import sweep_status\nsweep_status(timeout=3)")
    page.reload()
    page.wait_for_selector("#connection[data-state=live]")
    probes = {e["key"]: e["probe"] for e in clean.api("GET", "/endpoints").json()}
    for key in tiles:
        tile = page.locator(f"#services .tile[data-service='{key}']")
        assert tile.get_attribute("data-status") == probes[key]["status"] != "unknown"
        latency = math.floor(probes[key]["latency_ms"] + 0.5)  # as Math.round does
        assert f"{latency} ms" in tile.locator(".tile-status").inner_text()
        assert "checked" in tile.locator(".tile-meta").inner_text()
        # The same instant: the page's first state is embedded by json_script (milliseconds, "Z"), the API and the
        # pushes give microseconds and "+00:00"; whichever the tile was drawn from last.
        shown = datetime.fromisoformat(tile.locator(".tile-meta time").get_attribute("datetime").replace("Z", "+00:00"))
        checked = datetime.fromisoformat(probes[key]["checked_at"])
        assert abs(shown - checked) < timedelta(milliseconds=1), (shown, checked)
    vllm_state = page.locator("#now-serving .serving-vllm .status").inner_text()
    assert vllm_state == probes["vllm"]["status"]
    assert page.locator(f"#services .tile[data-service='{DISABLED}']").count() == 0


def test_scheduled_jobs_appear_sorted_by_next_run_with_stale_marks(dashboard, clean):
    page = dashboard.page
    now = datetime.now(UTC)
    jobs = [
        {
            "id": "nightly-eval",
            "name": "Nightly eval",
            "owner": "ml-team",
            "schedule": "0 2 * * *",
            "next_run": (now + timedelta(hours=5)).isoformat(),
            "model": "small",
        },
        {
            "id": "embed-refresh",
            "name": "Embedding refresh",
            "owner": "search",
            "schedule": "every 30 minutes",
            "next_run": (now + timedelta(minutes=30)).isoformat(),
        },
        {
            "id": "forgotten",
            "name": "Forgotten job",
            "owner": "nobody",
            "schedule": "weekly",
            "next_run": (now - timedelta(days=3)).isoformat(),
        },
        {"id": "adhoc", "name": "Ad-hoc", "owner": "ops", "schedule": "when asked"},
    ]
    for job in jobs:
        assert clean.api("POST", "/schedule", json=job).status_code == 201
    rows = page.locator("#schedule tr[data-job]")
    page.wait_for_function("() => document.querySelectorAll('#schedule tr[data-job]').length === 4")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.job)") == [
        "forgotten",
        "embed-refresh",
        "nightly-eval",
        "adhoc",
    ]
    stale = page.locator("#schedule tr.stale")
    assert stale.evaluate_all("rows => rows.map(r => r.dataset.job)") == ["forgotten"]
    assert "stale" in stale.locator(".badge").inner_text()
    assert "Nightly eval" in page.locator("#schedule tr[data-job=nightly-eval]").inner_text()

    assert clean.api("DELETE", "/schedule/embed-refresh").status_code == 204
    page.wait_for_function("() => !document.querySelector(\"#schedule tr[data-job='embed-refresh']\")")
    revived = {**jobs[2], "next_run": (now + timedelta(minutes=1)).isoformat()}
    assert clean.api("POST", "/schedule", json=revived).status_code == 200  # replaced
    page.wait_for_function("() => !document.querySelector('#schedule tr.stale')")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.job)") == ["forgotten", "nightly-eval", "adhoc"]


def test_a_failed_swap_marks_the_step_it_failed_at_and_shows_why(dashboard, clean):
    page = dashboard.page
    clean.sim.set_fail_mode("oom")
    previous = shown_swap(page)
    click_swap(page, "small")
    swap_id = wait_new_swap(page, previous)
    wait_swap_state(page, "failed")
    statuses = step_statuses(page)
    assert [statuses[step] for step in STEPS] == ["done", "done", "done", "failed", "todo"]
    swap = clean.api("GET", f"/swap/{swap_id}").json()
    assert swap["state"] == "failed" and swap["error"]
    assert page.locator("#active-swap .swap-notice .notice-error").text_content() == swap["error"]
    assert page.locator("#now-serving .serving-model").inner_text() == "nothing"
    assert not page.locator("li.model button[data-action=swap]").first.is_disabled()  # free to try again


def test_the_swap_page_follows_a_running_swap(dashboard, clean):
    page = dashboard.page
    clean.sim.set_load_seconds(4.0)
    swap = clean.swap_start("tiny")
    clean.swap_wait(swap["id"], states={"loading"})
    page.goto(f"/swaps/{swap['id']}/")
    first = len(rendered_seqs(page))
    page.wait_for_selector("#swap-state[data-state=ready]", timeout=30_000)
    seqs = wait_log_matches(page, clean, swap["id"])
    assert len(seqs) > first  # lines arrived after the page was rendered
    assert "Finished" in page.locator("#swap-live").inner_text()
