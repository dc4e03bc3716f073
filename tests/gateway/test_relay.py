"""The gateway relays to the service that serves the model, streams as produced, and says no clearly."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from sparksim.fake_services import speech_wav, tiny_wav
from testkit.api import client

pytestmark = pytest.mark.integration


def _token_chunks(response: httpx.Response) -> list[tuple[float, dict]]:
    """(arrival time, parsed chunk) of every token chunk of an SSE answer, as the client reads them."""
    chunks = []
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0].get("delta", {}) if chunk.get("choices") else {}
            if delta.get("content"):
                chunks.append((time.perf_counter(), chunk))
    return chunks


def test_streamed_chunks_reach_the_client_as_they_are_produced(deployment, main, alpha):
    body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "stream": True}
    with client(main, deployment.tokens["inference"]) as gateway:
        started = time.perf_counter()
        with gateway.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = _token_chunks(response)
        ended = time.perf_counter()
    assert len(chunks) == 12
    arrivals = [at for at, _ in chunks]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    # The fake vLLM produces one token every 50 ms. Buffering would deliver them together at the end.
    assert arrivals[0] - started < 0.5
    assert ended - arrivals[0] > 0.4, "the first token arrived only when the answer was complete"
    assert sum(1 for gap in gaps if gap > 0.02) >= len(gaps) - 2, gaps
    assert "".join(c["choices"][0]["delta"]["content"] for _, c in chunks).startswith("the spark")


def test_non_streamed_completion_and_plain_completions(deployment, main, alpha):
    with client(main, deployment.tokens["inference"]) as gateway:
        chat = gateway.post("/v1/chat/completions", json={"model": "alpha", "messages": [], "max_tokens": 3})
        plain = gateway.post("/v1/completions", json={"model": "alpha", "prompt": "x", "max_tokens": 2})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "the spark simulated"
    assert plain.status_code == 200 and plain.json()["object"] == "text_completion"


def test_embeddings_speech_and_an_uploaded_transcription_reach_their_services(deployment, main, fakes):
    with client(main, deployment.tokens["inference"]) as gateway:
        embedding = gateway.post("/v1/embeddings", json={"model": "sim/embed", "input": ["a", "b"]})
        speech = gateway.post("/v1/audio/speech", json={"model": "sim/kokoro", "input": "hello", "voice": "af"})
        transcription = gateway.post(
            "/v1/audio/transcriptions",
            data={"model": "sim/parakeet", "language": "en"},
            files={"file": ("clip.wav", tiny_wav(0.5), "audio/wav")},
        )
    assert embedding.status_code == 200 and len(embedding.json()["data"]) == 2
    assert speech.status_code == 200 and speech.headers["content-type"] == "audio/wav"
    assert speech.content.startswith(b"RIFF")
    assert transcription.status_code == 200, transcription.text
    assert transcription.json() == {"text": ""}
    assert "POST /v1/audio/transcriptions" in fakes["stt"].log


def test_a_large_answer_read_slowly_arrives_whole_and_in_order(deployment, main, fakes):
    """Megabytes relayed to a client that reads slower than they come: the server's socket fills, and each chunk
    written while it is full must wait its turn behind what is queued, none lost, repeated or reordered."""
    text = "spark " * 400
    expected = speech_wav(text)  # 7.3 MiB of samples counting up
    received = bytearray()
    with client(main, deployment.tokens["inference"]) as gateway:
        body = {"model": "sim/kokoro", "input": text, "voice": "af"}
        with gateway.stream("POST", "/v1/audio/speech", json=body) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw(16384):
                received += chunk
                if len(received) < len(expected) // 2:
                    time.sleep(0.002)  # the first half slowly: the socket buffers on both sides fill
    assert len(received) == len(expected)
    if received != expected:
        first = next(i for i, (got, want) in enumerate(zip(received, expected, strict=True)) if got != want)
        pytest.fail(f"the answer differs from the upstream's from byte {first} on")


def test_models_is_the_union_of_what_services_serve_with_service_and_state(deployment, main, alpha):
    with client(main, deployment.tokens["inference"]) as gateway:
        listing = gateway.get("/v1/models")
        one = gateway.get("/v1/models/sim/embed")
        missing = gateway.get("/v1/models/nope")
    assert listing.status_code == 200 and listing.json()["object"] == "list"
    by_id = {entry["id"]: entry for entry in listing.json()["data"]}
    assert by_id["alpha"]["service"] == "vllm" and by_id["alpha"]["state"] == "ready"
    assert by_id["sim/embed"]["service"] == "embeddings"
    assert by_id["sim/parakeet"]["service"] == "parakeet-asr"
    assert by_id["sim/kokoro"]["service"] == "kokoro-tts"
    assert "beta" not in by_id, "on-demand is off: catalog models that are not loaded are not offered"
    assert one.json()["service"] == "embeddings"
    assert missing.status_code == 404


def test_an_unknown_model_is_404_with_the_known_ones(deployment, main, alpha):
    with client(main, deployment.tokens["inference"]) as gateway:
        response = gateway.post("/v1/chat/completions", json={"model": "no-such-model", "messages": []})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert {"alpha", "sim/embed", "sim/parakeet", "sim/kokoro"} <= set(error["models"])
    assert "no-such-model" in error["message"] and "alpha" in error["message"]


def test_on_demand_swap_is_off_by_default(deployment, main, api, alpha):
    before = len(api.get("/api/swaps", params={"limit": 200}).json())
    with client(main, deployment.tokens["inference"]) as gateway:
        response = gateway.post("/v1/chat/completions", json={"model": "beta", "messages": []})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_loaded"
    assert "on-demand" in response.json()["error"]["message"]
    assert len(api.get("/api/swaps", params={"limit": 200}).json()) == before
    assert api.get("/api/status").json()["serving"]["model"] == "alpha"


def test_credentials_401_403_and_every_scope_that_may_infer(deployment, main, alpha):
    body = {"model": "alpha", "messages": [], "max_tokens": 1}
    with httpx.Client(base_url=main.url, timeout=30) as anonymous:
        missing = anonymous.post("/v1/chat/completions", json=body)
        bad = anonymous.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sct_nope_nope"})
        listing = anonymous.get("/v1/models")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "authentication_error"
    assert bad.status_code == 401 and listing.status_code == 401
    with client(main, deployment.tokens["read"]) as reader:
        forbidden = reader.post("/v1/chat/completions", json=body)
    assert forbidden.status_code == 403 and "inference" in forbidden.json()["error"]["message"]
    for scope in ("inference", "operate", "admin"):
        with client(main, deployment.tokens[scope]) as caller:
            assert caller.post("/v1/chat/completions", json=body).status_code == 200, scope


def test_open_mode_needs_no_credentials(deployment, open_gateway, alpha):
    with httpx.Client(base_url=open_gateway.url, timeout=30) as anonymous:
        listing = anonymous.get("/v1/models")
        answer = anonymous.post("/v1/chat/completions", json={"model": "alpha", "messages": [], "max_tokens": 1})
    assert listing.status_code == 200 and "alpha" in {entry["id"] for entry in listing.json()["data"]}
    assert answer.status_code == 200


def test_bad_bodies_are_400_and_wrong_methods_405(deployment, main, alpha):
    with client(main, deployment.tokens["inference"]) as gateway:
        not_json = gateway.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
        not_object = gateway.post("/v1/chat/completions", json=[1, 2])
        no_model = gateway.post("/v1/chat/completions", json={"messages": []})
        get = gateway.get("/v1/chat/completions")
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert not_object.status_code == 400
    assert no_model.status_code == 400 and no_model.json()["error"]["code"] == "model_required"
    assert get.status_code == 405


def test_metrics_count_requests_errors_and_latency_per_service(deployment, main, alpha):
    with client(main, deployment.tokens["inference"]) as gateway:
        assert gateway.post("/v1/embeddings", json={"model": "sim/embed", "input": "x"}).status_code == 200
        assert gateway.post("/v1/chat/completions", json={"model": "nope", "messages": []}).status_code == 404
    with client(main, deployment.tokens["read"]) as reader:
        text = reader.get("/metrics").text
    assert 'sparkcontrol_gateway_requests_total{route="embeddings",service="embeddings",status="200"}' in text
    assert 'sparkcontrol_gateway_requests_total{route="chat/completions",service="-",status="404"}' in text
    assert 'sparkcontrol_gateway_request_seconds_count{route="embeddings",service="embeddings"}' in text
    assert 'sparkcontrol_gateway_in_flight{service="embeddings"} 0.0' in text
    assert "sparkcontrol_gateway_errors_total" in text
