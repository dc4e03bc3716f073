"""A scheduled action on the dashboard: it appears live when created, then its run and outcome show as it runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.integration


def test_a_scheduled_swap_appears_on_the_dashboard_and_runs(dashboard, clean):
    page = dashboard.page
    panel = page.locator("#scheduled-actions")
    panel.get_by_text("No scheduled actions.").wait_for()

    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    body = {
        "name": "browser-nightly",
        "cron": f"{due.minute} {due.hour} * * * {due.second}",
        "action": "swap",
        "model": "tiny",
    }
    response = clean.api("POST", "/actions", json=body, token=clean.admin_token)
    assert response.status_code == 201, response.text
    try:
        row = panel.locator("tr[data-action='browser-nightly']")
        row.wait_for()  # from the websocket: the page was not reloaded
        assert "swap tiny" in row.inner_text() and "never run" in row.inner_text()
        row.locator("[data-outcome='ok']").wait_for(timeout=60_000)
        runs = clean.api("GET", "/actions/browser-nightly/runs").json()
        assert [run["outcome"] for run in runs] == ["ok"], runs
        swap = clean.swap_wait(runs[0]["swap"])
        assert swap["state"] == "ready" and swap["requested_by"] == "scheduler:browser-nightly"
        assert "swapped to tiny" in row.inner_text()

        # A warm-up of the model now served, run now: one-token completion through this server's gateway.
        warm = {"name": "browser-warm", "cron": "0 6 * * *", "action": "warm"}
        assert clean.api("POST", "/actions", json=warm, token=clean.admin_token).status_code == 201
        assert clean.api("POST", "/actions/browser-warm/run", token=clean.admin_token).status_code == 202
        warm_row = panel.locator("tr[data-action='browser-warm']")
        warm_row.locator("[data-outcome='ok']").wait_for(timeout=60_000)
        assert "answered a one-token completion" in warm_row.inner_text()
    finally:
        for name in ("browser-nightly", "browser-warm"):
            clean.api("DELETE", f"/actions/{name}", token=clean.admin_token)
    panel.get_by_text("No scheduled actions.").wait_for()  # the deletion reaches the page too
