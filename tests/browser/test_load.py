"""The load panel in a real browser: requests sent through the gateway to the simulated vLLM move its charts."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.integration

STREAMS = 3


def _figure(page, chart: str, figure: str, node: str) -> float | None:  # type: ignore[no-untyped-def]
    text = page.evaluate(
        """([chart, figure, node]) => {
            const box = document.querySelector(`#load .load-chart[data-chart="${chart}"]`);
            const item = box && box.querySelector(`.load-now-item[data-figure="${figure}"][data-node="${node}"]`);
            return item ? item.textContent : null;
        }""",
        [chart, figure, node],
    )
    if text is None:
        return None
    value = text.rsplit(":", 1)[1].split()[0]
    return None if value == "–" else float(value)


def _wait(page, check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"the load panel never showed {what}"
        page.wait_for_timeout(250)


def test_gateway_load_moves_the_load_charts(dashboard, clean, artifacts):
    page = dashboard.page
    head = clean.sim.head.name
    swap = clean.swap_start("tiny")
    assert clean.swap_wait(swap["id"])["state"] == "ready"
    token = clean.service.token("load-inference", "inference")
    page.wait_for_selector("#load[data-state=ok] .load-chart[data-chart=requests]")
    _wait(page, lambda: _figure(page, "requests", "running", head) == 0, "an idle head")
    assert page.locator("#load .load-swaps").inner_text().count("Swap to tiny") >= 1

    stop = threading.Event()
    answered: list[int] = []

    def chat() -> None:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40, "stream": True}
        headers = {"Authorization": f"Bearer {token}"}
        while not stop.is_set():
            with httpx.stream(
                "POST", f"{clean.url}/v1/chat/completions", json=body, headers=headers, timeout=30
            ) as response:
                answered.append(response.status_code)
                for _ in response.iter_bytes():
                    pass

    senders = [threading.Thread(target=chat, daemon=True) for _ in range(STREAMS)]
    for sender in senders:
        sender.start()
    try:
        _wait(page, lambda: (_figure(page, "requests", "running", head) or 0) >= 1, "requests running")
        _wait(page, lambda: (_figure(page, "tokens", "tokens", head) or 0) > 0, "tokens generated")
        _wait(page, lambda: (_figure(page, "gpu", "gpu", head) or 0) > 0, "the GPU busy")
        page.locator("#load").screenshot(path=str(artifacts / "load-busy.png"))
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
    assert answered and set(answered) == {200}
    _wait(page, lambda: _figure(page, "requests", "running", head) == 0, "the requests finished")
    _wait(page, lambda: _figure(page, "gpu", "gpu", head) == 0, "the GPU idle again")
    assert int(page.get_attribute("#load .load-chart[data-chart=gpu]", "data-points")) >= 3
    page.click("#load [data-range=day]")
    assert page.get_attribute("#load [data-range=day]", "aria-pressed") == "true"
    page.wait_for_selector("#load[data-state=ok]")
