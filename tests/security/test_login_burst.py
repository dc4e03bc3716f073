"""A burst of wrong sign-ins (each a deliberately slow password hash) must not starve the rest of the server:
`/api/health` stays fast while 32 of them are in flight (real `manage.py serve`, real hasher)."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from tests.security.serving import ServeProcess

pytestmark = pytest.mark.integration

BURST = 32


def test_parallel_wrong_sign_ins_do_not_hold_up_health(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = ServeProcess(tmp_path / "burst")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            page = client.get("/login/")
            csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1).decode()
            cookies = dict(client.cookies)

        def wrong_sign_in(index: int) -> None:
            try:
                httpx.post(
                    f"{server.url}/login/",
                    data={"username": f"nobody-{index}", "password": "wrong", "csrfmiddlewaretoken": csrf},
                    cookies=cookies,
                    timeout=6,
                )
            except httpx.HTTPError:
                pass  # still queued when the test is over: the server is stopped below

        burst = [threading.Thread(target=wrong_sign_in, args=(i,), daemon=True) for i in range(BURST)]
        for thread in burst:
            thread.start()
        time.sleep(0.3)  # the burst is in: every sign-in request has arrived
        latencies = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(5):
                started = time.monotonic()
                assert client.get("/api/health").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.2)
        assert max(latencies) < 1.0, latencies
    finally:
        server.stop()
