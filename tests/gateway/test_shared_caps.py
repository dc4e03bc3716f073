"""Scaled out, a service's cap holds across web processes: two gateways on one Redis never exceed it together."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from tests.gateway.test_limits import Stream, _set_cap

pytestmark = pytest.mark.integration

RUNNING = re.compile(r"^vllm:num_requests_running\{[^}]*\} ([0-9.]+)$", re.M)


class UpstreamWatch(threading.Thread):
    """Reads the fake vLLM's own count of requests in its batch every 20 ms; keeps the highest."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.highest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self.stop.is_set():
                try:
                    text = http.get(f"{self.url}/metrics").text
                except httpx.HTTPError:
                    continue
                self.highest = max([self.highest, *(float(value) for value in RUNNING.findall(text))])
                time.sleep(0.02)


@pytest.fixture
def vllm_cap_2(deployment, alpha):  # type: ignore[no-untyped-def]
    _set_cap(deployment, "vllm", 2)
    yield
    _set_cap(deployment, "vllm", 0)


def test_two_web_processes_together_never_send_the_upstream_more_than_the_cap(
    deployment, main, open_gateway, sim, vllm_cap_2
):
    watch = UpstreamWatch(f"http://127.0.0.1:{sim.vllm_port}")
    watch.start()
    token = deployment.tokens["inference"]
    streams = [Stream(server.url, token, tokens=20) for server in (main, open_gateway) for _ in range(3)]
    for stream in streams:
        stream.start()
    for stream in streams:
        stream.join(60)
    watch.stop.set()
    watch.join(5)
    refused = {
        index: (stream.status, stream.text[:400]) for index, stream in enumerate(streams) if stream.status != 200
    }
    assert not refused, f"streams answered otherwise than 200 (index: status, body): {refused}"
    assert watch.highest == 2, f"the upstream saw {watch.highest} requests at once; the cap is 2"
