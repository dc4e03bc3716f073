"""A dropped websocket mid-swap: the dashboard reconnects with backoff and catches up from the events API, so the
rendered log has no gap and no duplicate, whatever was lost or repeated on the way."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.browser.conftest import open_page
from tests.browser.ui import click_swap, rendered_seqs, shown_swap, wait_log_matches, wait_new_swap, wait_swap_state

pytestmark = pytest.mark.integration

WATCH_CONNECTION = """() => {
  window.__connection = [];
  const el = document.querySelector('#connection');
  new MutationObserver(() => window.__connection.push(el.dataset.state))
    .observe(el, {attributes: true, attributeFilter: ['data-state']});
}"""


@dataclass
class Relay:
    """Sits on the page's websocket (Playwright's WebSocket routing): forwards both ways, and on request drops a
    connection after losing messages silently, refuses reconnections, and replays old messages as duplicates."""

    refuse_next: int = 0
    connections: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    lost: list[dict[str, Any]] = field(default_factory=list)
    replayed: list[dict[str, Any]] = field(default_factory=list)

    def route(self, page_side: Any) -> None:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            page_side.close(code=1011, reason="server unavailable")
            return
        server_side = page_side.connect_to_server()
        connection = {"page": page_side, "server": server_side, "dead": False, "events": []}
        self.connections.append(connection)
        for message in self.replayed:  # what a confused proxy might send again: must be ignored as duplicates
            page_side.send(json.dumps(message))

        def from_server(raw: str | bytes) -> None:
            message = json.loads(raw)
            if connection["dead"]:
                self.lost.append(message)  # lost in transit: the page never sees it
                return
            if message.get("kind") == "swap_events":
                connection["events"].append(message)
            page_side.send(raw)

        server_side.on_message(from_server)
        page_side.on_message(lambda raw: server_side.send(raw))

    def go_dead(self) -> None:
        """Stop delivering on the current connection (as a half-open TCP connection would)."""
        self.connections[-1]["dead"] = True

    def drop(self, *, refuse: int, replay: int) -> None:
        connection = self.connections[-1]
        self.replayed = connection["events"][-replay:]
        self.refuse_next = refuse
        connection["page"].close(code=4000, reason="dropped by the test")
        connection["server"].close()


def lost_seqs(relay: Relay, swap_id: str) -> list[int]:
    return [
        event["seq"]
        for message in relay.lost
        if message.get("kind") == "swap_events" and message.get("swap_id") == swap_id
        for event in message["events"]
    ]


def pump_until(page: Any, condition: Any, message: str, timeout: float = 20.0) -> None:
    """Wait for a condition on the test's side, letting Playwright deliver the relay's callbacks meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        page.wait_for_timeout(50)


def test_reconnect_mid_swap_leaves_no_gap_and_no_duplicate(browser, clean):
    relay = Relay()
    watched = open_page(
        browser, clean, before=lambda context: context.route_web_socket(re.compile(r"/ws/swaps/$"), relay.route)
    )
    page = watched.page
    try:
        page.evaluate(WATCH_CONNECTION)
        clean.sim.set_load_seconds(6.0)
        previous = shown_swap(page)
        click_swap(page, "tiny")
        swap_id = wait_new_swap(page, previous)
        page.wait_for_function("() => document.querySelectorAll('#swap-log li.ev-log').length >= 3")
        before = rendered_seqs(page)

        relay.go_dead()
        pump_until(page, lambda: lost_seqs(relay, swap_id), "no swap event was lost while the connection was dead")
        relay.drop(refuse=2, replay=2)  # then the connection drops; the next two reconnections fail
        page.wait_for_function("() => window.__connection.filter(s => s === 'reconnecting').length >= 1")
        wait_swap_state(page, "ready", timeout=40_000)
        assert shown_swap(page) == swap_id
        page.wait_for_function("() => document.querySelector('#connection').dataset.state === 'live'")

        shown = wait_log_matches(page, clean, swap_id)
        assert shown == list(range(1, len(shown) + 1))
        assert len(shown) == len(set(shown))
        # The test did what it says: messages were lost, reconnections refused, duplicates replayed.
        missed = lost_seqs(relay, swap_id)
        assert missed and set(missed) <= set(shown) and not set(missed) & set(before)
        assert relay.refused == 2 and len(relay.connections) >= 2
        assert relay.replayed and all(message["swap_id"] == swap_id for message in relay.replayed)
        assert not watched.errors
    finally:
        watched.context.close()


def test_reconnect_after_the_swap_ended_shows_its_outcome(browser, clean):
    relay = Relay()
    watched = open_page(
        browser, clean, before=lambda context: context.route_web_socket(re.compile(r"/ws/swaps/$"), relay.route)
    )
    page = watched.page
    try:
        clean.sim.set_load_seconds(1.0)
        relay.go_dead()  # the page hears nothing from here on
        swap = clean.swap_start("small")
        clean.swap_wait(swap["id"])
        assert page.locator(f"#history tr[data-swap='{swap['id']}']").count() == 0  # it really missed it all
        relay.drop(refuse=1, replay=0)
        page.wait_for_selector(f"#swap-log[data-swap='{swap['id']}']", state="attached")
        wait_swap_state(page, "ready")
        wait_log_matches(page, clean, swap["id"])
        assert page.locator("#now-serving .serving-key").inner_text() == "small"
        page.locator(f"#history tr[data-swap='{swap['id']}']").wait_for()
        assert not watched.errors
    finally:
        watched.context.close()


def test_a_page_whose_session_ended_says_so_and_stops_reconnecting(browser, clean):
    relay = Relay()
    watched = open_page(
        browser, clean, before=lambda context: context.route_web_socket(re.compile(r"/ws/swaps/$"), relay.route)
    )
    page = watched.page
    try:
        # The session ends elsewhere (signed out from another tab of the same browser).
        csrf = next(c["value"] for c in watched.context.cookies() if c["name"] == "csrftoken")
        signed_out = watched.context.request.post("/logout/", headers={"X-CSRFToken": csrf}, max_redirects=0)
        assert signed_out.status == 302
        relay.drop(refuse=0, replay=0)
        page.wait_for_selector("#connection[data-state=signed-out]")
        notice = page.locator("#session-notice")
        assert notice.is_visible() and "session has ended" in notice.inner_text()
        attempts = len(relay.connections)
        page.wait_for_timeout(3000)
        assert len(relay.connections) == attempts  # no more reconnections
        assert not watched.errors
    finally:
        watched.context.close()
