"""The swap card's progress bar in a real browser: it follows vLLM's start-up phases live, says a first load has no
estimate, and shows one for the next load of the same model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import open_page
from tests.browser.ui import click_swap, wait_new_swap, wait_swap_state

pytestmark = pytest.mark.integration

PHASES = ["starting", "weights", "compile", "kv_cache", "cuda_graphs", "api_server"]

# Records, from inside the page, every (phase, percent, time-left text, eta) the swap card's bar shows.
WATCH_PROGRESS = """() => {
  window.__progress = [];
  const el = document.querySelector('#active-swap .swap-progress');
  const record = () => {
    if (el.hidden) return;
    const bar = el.querySelector('progress');
    const item = {
      swap: el.dataset.swap, phase: el.dataset.phase, state: el.dataset.state, eta: el.dataset.eta,
      value: bar ? Number(bar.value) : null,
      left: el.querySelector('.progress-eta')?.textContent || '',
    };
    const last = window.__progress[window.__progress.length - 1];
    if (!last || JSON.stringify(last) !== JSON.stringify(item)) window.__progress.push(item);
  };
  new MutationObserver(record).observe(el, {attributes: true, childList: true, subtree: true, characterData: true});
}"""


def _swap_and_watch(page: Any, key: str) -> list[dict[str, Any]]:
    page.evaluate(WATCH_PROGRESS)
    previous = page.get_attribute("#swap-log", "data-swap") or ""
    click_swap(page, key)
    swap_id = wait_new_swap(page, previous)
    wait_swap_state(page, "ready")
    page.wait_for_function("() => document.querySelector('#active-swap .swap-progress')?.dataset.state === 'ready'")
    return [item for item in page.evaluate("window.__progress") if item["swap"] == swap_id]


def _phases(seen: list[dict[str, Any]]) -> list[str]:
    order: list[str] = []
    for item in seen:
        if item["state"] == "loading" and (not order or order[-1] != item["phase"]):
            order.append(item["phase"])
    return order


def test_the_bar_follows_the_phases_and_the_second_load_shows_how_long_is_left(browser, clean):
    created = clean.api(
        "POST", "/models", json={"key": "paced", "name": "Paced", "repo": "sim/paced-model"}, token=clean.admin_token
    )
    assert created.status_code == 201, created.text
    clean.sim.set_load_seconds(4.0)
    watched = open_page(browser, clean)  # after the model exists, so the catalog lists it
    page = watched.page
    try:
        first = _swap_and_watch(page, "paced")
        assert _phases(first) == PHASES, first
        # Until it is done (the last update comes just before the swap is ready), a first load has no estimate.
        loading = [item for item in first if item["state"] == "loading" and item["value"] < 1]
        assert all(item["left"] == "first load of this model" and item["eta"] == "" for item in loading), loading
        values = [item["value"] for item in first]
        assert values == sorted(values), "the bar went backwards"
        assert 0 < loading[-1]["value"] < 1 and first[-1]["value"] == 1
        assert first[-1]["left"] == "loaded"

        second = _swap_and_watch(page, "paced")
        loading = [item for item in second if item["state"] == "loading" and item["value"] < 1]
        assert loading, second
        assert all(item["eta"] != "" for item in loading), loading
        assert any(item["left"] == "less than a minute left" for item in loading), loading
        assert "first load of this model" not in {item["left"] for item in second}
        assert [phase for phase in _phases(second) if phase in ("weights", "cuda_graphs")] == ["weights", "cuda_graphs"]
        assert second[-1]["value"] == 1
        assert page.locator("#active-swap .swap-progress .progress-phase").inner_text() == "ready"
    finally:
        watched.context.close()
    assert not watched.errors, f"script errors on the page: {watched.errors}"
    assert not watched.csp_violations(), f"Content-Security-Policy violations: {watched.csp_violations()}"
