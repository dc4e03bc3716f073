"""Small helpers for reading and driving the dashboard page."""

from __future__ import annotations

import time
from typing import Any


def click_swap(page: Any, key: str) -> None:
    """Press a model's Swap button and confirm in the dialog."""
    page.click(f"li.model[data-key='{key}'] button[data-action=swap]")
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    assert key in dialog.inner_text()
    page.click("#confirm-ok")
    dialog.wait_for(state="hidden")


def wait_new_swap(page: Any, previous: str) -> str:
    """Wait until the swap panel shows a swap other than `previous`; returns its id."""
    page.wait_for_function(
        "previous => (document.querySelector('#swap-log')?.dataset.swap || '') !== previous", arg=previous
    )
    return shown_swap(page)


def wait_swap_state(page: Any, state: str, timeout: float = 30_000) -> None:
    page.wait_for_selector(f"#swap-state[data-state='{state}']", timeout=timeout)


def step_statuses(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#active-swap .step", "steps => Object.fromEntries(steps.map(s => [s.dataset.step, s.dataset.status]))"
    )


def rendered_seqs(page: Any) -> list[int]:
    return page.eval_on_selector_all("#swap-log li[data-seq]", "items => items.map(li => Number(li.dataset.seq))")


def rendered_messages(page: Any) -> list[str]:
    return page.eval_on_selector_all("#swap-log li .ev-msg", "items => items.map(el => el.textContent)")


def shown_swap(page: Any) -> str:
    return page.get_attribute("#swap-log", "data-swap") or ""


TERMINAL_STATES = {"ready", "failed", "cancelled", "interrupted"}


def reading_order(events: list[dict[str, Any]]) -> list[int]:
    """The seqs as the log shows them: lines recorded after the state line that ended the swap go above it."""
    seqs = [event["seq"] for event in events]
    states = [i for i, event in enumerate(events) if event["kind"] == "state"]
    if states and events[states[-1]]["state"] in TERMINAL_STATES:
        end = seqs.pop(states[-1])
        seqs.append(end)
    return seqs


def wait_log_matches(page: Any, server: Any, swap_id: str, timeout: float = 15.0) -> list[int]:
    """Wait until the rendered log is exactly the API's events in reading order (the runner may add lines just after
    "ready", shown above it), and still is a moment later; returns the seqs in order."""
    deadline = time.monotonic() + timeout
    while True:
        expected = reading_order(server.events(swap_id))
        shown = rendered_seqs(page)
        if shown == expected:
            page.wait_for_timeout(1200)
            again = reading_order(server.events(swap_id))
            if rendered_seqs(page) == again:
                return sorted(again)
        assert time.monotonic() < deadline, f"rendered {shown} but the API has {expected}"
        page.wait_for_timeout(100)
