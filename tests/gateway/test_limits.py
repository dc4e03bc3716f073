"""Per-service caps with a bounded wait queue (429 + Retry-After), and per-route body limits (413)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from sparksim.fake_services import tiny_wav
from testkit.api import client

pytestmark = pytest.mark.integration


def _set_cap(deployment, key: str, cap: int) -> None:  # type: ignore[no-untyped-def]
    deployment.run(
        f"from cluster.models import Service; Service.objects.filter(key={key!r}).update(max_in_flight={cap})"
    )
    time.sleep(1.6)  # the gateway rereads services and caps about once a second


@pytest.fixture
def vllm_cap_1(deployment, alpha):  # type: ignore[no-untyped-def]
    _set_cap(deployment, "vllm", 1)
    yield
    _set_cap(deployment, "vllm", 0)


class Stream(threading.Thread):
    """A streamed completion in the background; `started` is set when its first chunk arrives."""

    def __init__(self, url: str, token: str, tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.tokens = url, token, tokens
        self.started = threading.Event()
        self.status: int | None = None
        self.text = ""

    def run(self) -> None:
        body = {"model": "alpha", "messages": [], "max_tokens": self.tokens, "stream": True}
        with client_for(self.url, self.token) as g, g.stream("POST", "/v1/chat/completions", json=body) as r:
            self.status = r.status_code
            for chunk in r.iter_text():
                self.started.set()
                self.text += chunk
        self.started.set()


def client_for(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _post_later(url: str, token: str, results: list, *, tokens: int = 1) -> threading.Thread:
    def run() -> None:
        started = time.monotonic()
        with client_for(url, token) as gateway:
            body = {"model": "alpha", "messages": [], "max_tokens": tokens}
            response = gateway.post("/v1/chat/completions", json=body)
        results.append((response, time.monotonic() - started))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_full_queue_is_429_at_once_and_a_long_wait_is_429_too(deployment, strict, vllm_cap_1):
    token = deployment.tokens["inference"]
    holder = Stream(strict.url, token, tokens=40)  # ~2 s on the only slot
    holder.start()
    assert holder.started.wait(10)
    queued: list = []
    waiter = _post_later(strict.url, token, queued)  # takes the one place in the queue
    time.sleep(0.2)
    with client_for(strict.url, token) as gateway:
        started = time.monotonic()
        full = gateway.post("/v1/chat/completions", json={"model": "alpha", "messages": [], "max_tokens": 1})
        elapsed = time.monotonic() - started
    assert full.status_code == 429
    assert full.headers["Retry-After"] == "3"
    assert full.json()["error"]["type"] == "rate_limit_error" and "vllm" in full.json()["error"]["message"]
    assert elapsed < 0.4, "a full queue answers at once"
    waiter.join(10)
    [(response, waited)] = queued
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert "stayed at its cap of 1" in response.json()["error"]["message"]
    assert 0.5 <= waited < 2.0
    holder.join(10)
    assert holder.status == 200 and "[DONE]" in holder.text, "the request holding the slot is not disturbed"


def test_a_queued_request_gets_the_slot_when_it_frees(deployment, strict, vllm_cap_1):
    token = deployment.tokens["inference"]
    holder = Stream(strict.url, token, tokens=4)  # ~0.2 s
    holder.start()
    assert holder.started.wait(10)
    queued: list = []
    _post_later(strict.url, token, queued).join(10)
    [(response, waited)] = queued
    assert response.status_code == 200, response.text
    holder.join(10)
    assert holder.status == 200


def test_audio_services_are_capped_at_two_by_default(deployment):
    out = deployment.run(
        "from cluster.models import Service\n"
        "print(sorted(Service.objects.filter(kind__in=['stt', 'tts']).values_list('key', 'max_in_flight')))"
    )
    assert out.strip() == "[('kokoro-tts', 2), ('parakeet-asr', 2)]"


def test_bodies_over_the_route_limit_are_413_with_the_limit(deployment, strict, alpha):
    with client(strict, deployment.tokens["inference"]) as gateway:
        declared = gateway.post("/v1/chat/completions", json={"model": "alpha", "messages": [], "pad": "x" * 3000})

        def chunked():  # no Content-Length: counted while read
            yield b'{"model": "alpha", "pad": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        streamed = gateway.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        upload = gateway.post(
            "/v1/audio/transcriptions",
            data={"model": "sim/parakeet"},
            files={"file": ("clip.wav", tiny_wav(0.5), "audio/wav")},
        )
        small = gateway.post("/v1/chat/completions", json={"model": "alpha", "messages": [], "max_tokens": 1})
    assert declared.status_code == 413
    assert declared.json()["error"]["limit"] == 2048 and "2048" in declared.json()["error"]["message"]
    assert streamed.status_code == 413 and streamed.json()["error"]["limit"] == 2048
    assert upload.status_code == 413 and upload.json()["error"]["limit"] == 4096
    assert small.status_code == 200
