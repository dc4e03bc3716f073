"""Through a swap nothing fails that could wait: the incoming model is held until ready, the outgoing one is
refused once stopping begins, and the stop waits for the gateway's requests in flight (across processes too)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from testkit.api import swap_start, swap_wait
from tests.gateway.conftest import serving, wait_until

pytestmark = pytest.mark.integration


class Call(threading.Thread):
    """One gateway request in the background (streamed or not), keeping status, body and when it ended."""

    def __init__(self, url: str, token: str | None, model: str, *, tokens: int, stream: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.model, self.tokens, self.stream = url, token, model, tokens, stream
        self.started = threading.Event()
        self.status: int | None = None
        self.text = ""
        self.ended_at = 0.0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"model": self.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": self.tokens}
        with httpx.Client(base_url=self.url, headers=headers, timeout=90) as gateway:
            if self.stream:
                body["stream"] = True
                with gateway.stream("POST", "/v1/chat/completions", json=body) as response:
                    self.status = response.status_code
                    for chunk in response.iter_text():
                        self.started.set()
                        self.text += chunk
            else:
                self.started.set()
                response = gateway.post("/v1/chat/completions", json=body)
                self.status, self.text = response.status_code, response.text
        self.ended_at = time.monotonic()
        self.started.set()

    def tokens_received(self) -> int:
        count = 0
        for line in self.text.splitlines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                    count += 1
        return count


def _events(api: httpx.Client, swap_id: str) -> list[str]:
    return [event["message"] for event in api.get(f"/api/swap/{swap_id}/events").json()]


def _state(api: httpx.Client, swap_id: str) -> str:
    return api.get(f"/api/swap/{swap_id}").json()["state"]


def _outgoing_streams(url: str, token: str | None, count: int, tokens: int) -> list[Call]:
    streams = [Call(url, token, "alpha", tokens=tokens, stream=True) for _ in range(count)]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.started.wait(10)
    return streams


def test_twenty_requests_for_the_incoming_model_are_served_once_ready_and_no_outgoing_stream_is_cut(
    deployment, main, api, sim, alpha
):
    token = deployment.tokens["inference"]
    sim.set_load_seconds(1.5)
    outgoing = _outgoing_streams(main.url, token, count=4, tokens=40)  # ~2 s each
    response = swap_start(api, "beta")
    assert response.status_code == 202, response.text
    swap_id = response.json()["id"]
    incoming = [Call(main.url, token, "beta", tokens=3, stream=index % 2 == 0) for index in range(20)]
    for call in incoming:
        call.start()
    wait_until(lambda: _state(api, swap_id) == "stopping", timeout=20)
    with httpx.Client(base_url=main.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as gateway:
        refused = gateway.post("/v1/chat/completions", json={"model": "alpha", "messages": [], "max_tokens": 1})
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "model_swapping_out"
    assert int(refused.headers["Retry-After"]) > 0
    early = [(call.status, call.text[:300]) for call in incoming if call.status is not None]
    assert not early, f"the incoming model is held, not answered early: {early}"
    swap = swap_wait(api, swap_id, timeout=60)
    assert swap["state"] == "ready", swap
    ready_at = time.monotonic()
    for call in outgoing + incoming:
        call.join(30)
    for stream in outgoing:
        assert stream.status == 200
        assert stream.tokens_received() == 40 and "data: [DONE]" in stream.text, "cut mid-stream by the stop"
    failures = [call.text[:200] for call in incoming if call.status != 200]
    assert [call.status for call in incoming] == [200] * 20, failures
    for call in incoming:
        assert '"model": "beta"' in call.text and ("[DONE]" in call.text or not call.stream)
        assert call.ended_at >= ready_at - 1.0
    messages = _events(api, swap_id)
    assert any(message.startswith("draining: waiting") for message in messages), messages
    assert any(message.startswith("drained:") for message in messages), messages


def test_a_forced_swap_skips_the_drain_and_cuts_what_runs(deployment, main, api, sim, alpha):
    token = deployment.tokens["inference"]
    sim.set_load_seconds(0.5)
    [stream] = _outgoing_streams(main.url, token, count=1, tokens=60)  # ~3 s
    swap = swap_wait(api, swap_start(api, "beta", force=True).json()["id"], timeout=60)
    assert swap["state"] == "ready" and swap["forced"]
    stream.join(30)
    assert "data: [DONE]" not in stream.text and stream.tokens_received() < 60
    assert any("drain skipped (forced)" in message for message in _events(api, swap["id"]))


def test_the_drain_waits_for_a_gateway_in_another_process(deployment, main, open_gateway, api, sim, alpha):
    # The streams go through a gateway-only process; the swap runs in `main`'s worker: only the ledger connects them.
    sim.set_load_seconds(0.5)
    outgoing = _outgoing_streams(open_gateway.url, None, count=3, tokens=30)  # ~1.5 s
    swap_id = swap_start(api, "beta").json()["id"]
    wait_until(lambda: _state(api, swap_id) == "stopping", timeout=20)
    with httpx.Client(base_url=open_gateway.url, timeout=10) as gateway:
        refused = wait_until(
            lambda: (
                r
                if (r := gateway.post("/v1/chat/completions", json={"model": "alpha", "messages": []})).status_code
                == 503
                else None
            ),
            timeout=2,
        )
    assert refused.headers["Retry-After"]
    swap = swap_wait(api, swap_id, timeout=60)
    assert swap["state"] == "ready", swap
    for stream in outgoing:
        stream.join(30)
        assert stream.status == 200 and stream.tokens_received() == 30 and "data: [DONE]" in stream.text
    messages = _events(api, swap_id)
    assert any(message.startswith("drained:") for message in messages), messages


def test_a_hold_is_bounded(deployment, strict, api, sim, alpha):
    sim.set_load_seconds(3)
    swap_id = swap_start(api, "gamma").json()["id"]
    try:
        headers = {"Authorization": f"Bearer {deployment.tokens['inference']}"}
        with httpx.Client(base_url=strict.url, headers=headers) as g:
            started = time.monotonic()
            response = g.post("/v1/chat/completions", json={"model": "gamma", "messages": []}, timeout=10)
            waited = time.monotonic() - started
        assert response.status_code == 503 and response.json()["error"]["code"] == "model_loading"
        assert response.headers["Retry-After"] == "3"
        assert 0.4 <= waited < 2.5
    finally:
        swap_wait(api, swap_id, timeout=60)
        sim.set_load_seconds(0.5)


def test_a_held_request_learns_that_the_swap_failed(deployment, main, api, alpha):
    deployment.run(
        "from catalog.models import ModelEntry\n"
        "ModelEntry.objects.get_or_create(key='oomy', defaults={'name': 'oomy', 'repo': 'sim/oom'})"
    )
    swap_id = swap_start(api, "oomy").json()["id"]
    with httpx.Client(base_url=main.url, headers={"Authorization": f"Bearer {deployment.tokens['inference']}"}) as g:
        response = g.post("/v1/chat/completions", json={"model": "oomy", "messages": []}, timeout=60)
    assert swap_wait(api, swap_id)["state"] == "failed"
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "swap_failed" and "oomy" in error["message"] and "failed" in error["message"]
    serving(api, "alpha")
