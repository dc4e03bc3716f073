"""The dashboard scaled out: the Redis channel layer, a web process without a worker (`serve --no-worker`) and a
separate `manage.py db_worker` that runs the swaps. Everything the page sees live from the swap and from a probe
sweep run in yet another process has crossed processes through Redis.

Redis must run on 127.0.0.1:6379 (`.ci/run` starts it); the test takes an empty database of its own there
(SPARKCONTROL_TEST_REDIS_URL overrides) and flushes it afterwards.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import DISABLED, open_page
from tests.browser.harness import Server
from tests.browser.ui import (
    click_swap,
    shown_swap,
    step_statuses,
    wait_log_matches,
    wait_new_swap,
    wait_swap_state,
)

pytestmark = pytest.mark.integration


def empty_redis_database() -> str:
    import redis

    chosen = os.environ.get("SPARKCONTROL_TEST_REDIS_URL")
    if chosen:
        return chosen
    candidates = list(range(1, 16))
    random.shuffle(candidates)
    for number in candidates:
        url = f"redis://127.0.0.1:6379/{number}"
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        if client.dbsize() == 0:  # fails loudly when Redis is not running: these tests need it
            return url
    raise AssertionError("no empty Redis database on 127.0.0.1:6379 for the scaled-out dashboard test")


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory, sim: Any) -> Iterator[Server]:
    import redis

    url = empty_redis_database()
    running = Server(
        tmp=tmp_path_factory.mktemp("browser-scaled"),
        sim=sim,
        extra_env={"REDIS_URL": url, "DISABLED_SERVICES": DISABLED},
        worker_process=True,
    )
    try:
        yield running.start()
    finally:
        running.stop()
        if not os.environ.get("SPARKCONTROL_TEST_REDIS_URL"):
            redis.Redis.from_url(url).flushdb()


@pytest.fixture
def page(browser: Any, scaled: Server) -> Iterator[Any]:
    scaled.quiesce()
    watched = open_page(browser, scaled)
    watched.page.evaluate("window.__notReloaded = true")
    yield watched.page
    assert watched.page.evaluate("window.__notReloaded") is True
    watched.context.close()
    assert not watched.errors and not watched.csp_violations(), (watched.errors, watched.csp_violations())


def test_a_swap_run_by_a_separate_worker_streams_to_the_page_through_redis(page, scaled):
    scaled.sim.set_load_seconds(3.0)
    previous = shown_swap(page)
    click_swap(page, "tiny")
    swap_id = wait_new_swap(page, previous)
    page.wait_for_function(
        """() => document.querySelector('#active-swap .step[data-step=loading]')?.dataset.status === 'current'
                 && document.querySelectorAll('#swap-log li.ev-log').length >= 3"""
    )
    wait_swap_state(page, "ready")
    assert set(step_statuses(page).values()) == {"done"}
    wait_log_matches(page, scaled, swap_id)
    assert page.locator("#now-serving .serving-key").inner_text() == "tiny"
    # The web process has no worker: the swap ran in the db_worker process.
    assert "embedded task worker" not in scaled.service.procs["web"].output()
    assert "swaps.tasks.swap_execute" in scaled.service.procs["worker"].output()


def test_the_lock_banner_and_schedule_follow_the_api(page, scaled):
    grant = scaled.api("POST", "/swap/lock", json={"holder": "scaled-cron", "ttl_seconds": 300}).json()
    banner = page.locator("#lock-banner")
    banner.wait_for(state="visible")
    assert banner.locator(".holder").inner_text() == "scaled-cron"
    assert banner.locator(".epoch").inner_text() == str(grant["epoch"])
    job = {"id": "scaled-job", "name": "Scaled job", "owner": "ops", "schedule": "hourly"}
    assert scaled.api("POST", "/schedule", json=job).status_code == 201
    page.locator("#schedule tr[data-job=scaled-job]").wait_for()
    page.click("#force-release")
    page.click("#confirm-ok")
    banner.wait_for(state="hidden")


def test_a_probe_sweep_in_another_process_updates_the_tiles_live(page, scaled):
    scaled.swap_wait(scaled.swap_start("tiny")["id"])
    checked = (
        "() => document.querySelector('#services .tile[data-service=vllm] .tile-meta time')?.getAttribute('datetime')"
    )
    before = page.evaluate(checked)
    scaled.run("from cluster.sweeps import sweep_status\nsweep_status(timeout=3)")
    page.wait_for_function(f"before => ({checked})() !== before", arg=before)  # no reload: it came through Redis
    tile = page.locator("#services .tile[data-service=vllm]")
    assert tile.get_attribute("data-status") != "unknown" and "checked" in tile.locator(".tile-meta").inner_text()
    probe = next(e["probe"] for e in scaled.api("GET", "/endpoints").json() if e["key"] == "vllm")
    page.wait_for_function(
        "status => document.querySelector('#services .tile[data-service=vllm]').dataset.status === status",
        arg=probe["status"],
    )
    assert page.locator(f"#services .tile[data-service='{DISABLED}']").count() == 0
