"""The dashboard's model files panel in a real browser: a download started there reaches 100 % on the page, and the
nodes' disk then shows the model in their HF cache."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

# Every percentage the progress text showed, in order, recorded from inside the page.
WATCH_PERCENT = """() => {
  window.__percents = [];
  const record = () => {
    for (const el of document.querySelectorAll('#downloads .download-percent')) {
      const shown = el.textContent;
      if (window.__percents[window.__percents.length - 1] !== shown) window.__percents.push(shown);
    }
  };
  new MutationObserver(record).observe(document.querySelector('#downloads'), {childList: true, subtree: true});
}"""


def test_a_download_started_on_the_dashboard_reaches_100_percent(dashboard, clean):
    sim, page = clean.sim, dashboard.page
    sim.remove_hf_repo("sim/small-model")
    sim.set_hub(speed=1_500_000, repo="sim/small-model", weights_bytes=4_000_000)
    try:
        page.wait_for_selector("#download-model option[value=small]", state="attached")
        page.evaluate(WATCH_PERCENT)
        page.select_option("#download-model", "small")
        page.click("#download-start")
        row = page.wait_for_selector("#downloads tr[data-state=done]", timeout=90_000)
        assert row.query_selector(".download-percent").text_content() == "100 %"
        assert "small" in row.text_content() and "sim/small-model" in row.text_content()
        percents = page.evaluate("window.__percents")
        assert percents[-1] == "100 %", percents
        # Progress was shown on the way, not only the end (a few seconds at the simulated Hub's speed).
        assert any(value not in ("–", "100 %") for value in percents), percents
        # A one-node model: in the head's cache (spark1), not the worker's.
        page.wait_for_function(
            "() => (document.querySelector('#downloads .disk-table tr[data-node=spark1]') || {}).textContent"
            "?.includes('small: 3.8 MiB')"
        )
        assert "small: " not in page.text_content("#downloads .disk-table tr[data-node=spark2]")
        body = clean.api("GET", "/downloads?model=small").json()[0]
        assert body["state"] == "done" and body["bytes_done"] == body["bytes_total"] > 4_000_000
    finally:
        sim.set_hub(speed=0)
        sim.remove_hf_repo("sim/small-model")
