"""A service's tile opens its page (a day of probes drawn by uPlot), and a restart from the dashboard's tile, once
confirmed, goes through its states to up while the service really goes down and comes back (sparksim)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import open_page
from tests.browser.harness import Server

pytestmark = pytest.mark.integration

KEY = "asr-sim"
CONTAINER = "asr-sim"
LINK = "http://grafana.lan/d/asr"

# Every state the tile shows, recorded as it changes (tiles are re-rendered whole, so the list watches the subtree).
RECORD_STATES = """() => {
  window.restartStates = [];
  const record = () => {
    const tile = document.querySelector('#services .tile[data-service="asr-sim"]');
    const value = tile ? tile.dataset.restart || '' : '';
    const states = window.restartStates;
    if (value && states[states.length - 1] !== value) states.push(value);
  };
  new MutationObserver(record).observe(document.querySelector('#services .tiles'),
    { subtree: true, childList: true, attributes: true, attributeFilter: ['data-restart'] });
}"""

INKED_PIXELS = """canvas => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
  return inked;
}"""


def _sync(server: Server, overrides: Path, text: str | None) -> None:
    if text is None:
        overrides.unlink(missing_ok=True)
    else:
        overrides.write_text(text)
    server.run("from cluster.services import services_sync\nservices_sync()")


@pytest.fixture
def speech(clean: Server) -> Iterator[int]:
    """A speech service running as container `asr-sim` on spark2, named in services-overrides.yaml, probed 3 times."""
    port = clean.sim.run_service("spark2", CONTAINER, "stt", start_seconds=2.0)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the fake speech service never listened"
            time.sleep(0.1)
    overrides = clean.service.data_dir / "services-overrides.yaml"
    _sync(
        clean,
        overrides,
        f"services:\n  {KEY}:\n    name: Speech (sim)\n    kind: stt\n    node: spark2\n    port: {port}\n"
        f"    health_path: /health\n    container: {CONTAINER}\n    link: {LINK}\n",
    )
    clean.run(
        f"from cluster.sweeps import sweep_status\nfor _ in range(3):\n    sweep_status(timeout=3, keys=[{KEY!r}])"
    )
    try:
        yield port
    finally:
        _sync(clean, overrides, None)
        subprocess.run(clean.sim.ssh_argv("spark2", f"docker rm -f {CONTAINER}"), capture_output=True, timeout=60)


def test_a_tile_opens_its_service_page_and_a_confirmed_restart_goes_through_its_states_to_up(
    browser: Any, clean: Server, speech: int, artifacts: Path
) -> None:
    watched = open_page(browser, clean)
    page = watched.page
    try:
        tile = page.locator(f"#services .tile[data-service='{KEY}']")
        assert tile.get_attribute("data-status") == "up"
        # The service page: its endpoint, its link-out, and three probes drawn on uPlot's canvas.
        tile.locator("a.tile-link").click()
        page.wait_for_url(f"**/services/{KEY}/")
        page.wait_for_selector("#service-chart[data-drawn=true]")
        assert int(page.get_attribute("#service-chart", "data-points")) >= 3
        canvas = page.locator("#service-chart canvas")
        assert canvas.count() == 1 and canvas.bounding_box()["width"] > 300
        assert canvas.evaluate(INKED_PIXELS) > 100  # axes, grid and the points really drawn
        assert page.inner_text("#service-endpoint") == f"http://127.0.0.1:{speech}"
        assert page.get_attribute("#service-link", "href") == LINK
        assert "No errors recorded." in page.inner_text("#service-errors")
        page.screenshot(path=str(artifacts / "service-page.png"), full_page=True)

        # Back on the dashboard: restart from the tile, with its confirmation.
        page.goto("/")
        page.wait_for_selector("#connection[data-state=live]")
        page.evaluate(RECORD_STATES)
        tile.locator(".tile-restart-btn").click()
        dialog = page.locator("#confirm-dialog")
        dialog.wait_for(state="visible")
        text = dialog.inner_text()
        assert "Restart Speech (sim)?" in text and CONTAINER in text and "spark2" in text
        assert "It has not been restarted from Spark Control before." in text
        page.click("#confirm-ok")
        page.wait_for_function(
            f"() => document.querySelector('#services .tile[data-service=\"{KEY}\"]')?.dataset.restart === 'up'",
            timeout=90_000,
        )
        states = page.evaluate("() => window.restartStates")
        assert [state for state in states if state != "queued"] == ["stopping", "starting", "up"], states
        assert "restarted · up (down " in tile.locator(".tile-restart").inner_text()
        assert tile.get_attribute("data-status") == "up"
        # The outcome as automation reads it: up only after the probe saw the service again, down for its start-up.
        endpoint = next(e for e in clean.api("GET", "/endpoints").json() if e["key"] == KEY)
        assert endpoint["restart"]["state"] == "up" and endpoint["last_downtime_s"] >= 2.0
        # The next confirmation says how long it was down.
        tile.locator(".tile-restart-btn").click()
        dialog.wait_for(state="visible")
        assert f"At its last restart it was down for {endpoint['last_downtime_s']:.1f} s." in dialog.inner_text()
        page.screenshot(path=str(artifacts / "service-restart-confirm.png"))
        page.click("#confirm-dialog button[value=cancel]")
    finally:
        watched.context.close()
    assert not watched.errors, f"script errors on the page: {watched.errors}"
    assert not watched.csp_violations(), f"Content-Security-Policy violations: {watched.csp_violations()}"
