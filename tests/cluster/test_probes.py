"""Each probe kind against real fake services on loopback (sparksim.fake_services): up, down, and failure modes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from cluster.probes import (
    EngineMetrics,
    ProbeOutcome,
    ProbeTarget,
    parse_vllm_metrics,
    probe_client,
    probe_embeddings,
    probe_http,
    probe_qdrant,
    probe_service,
    probe_stt,
    probe_tcp,
    probe_tts,
    probe_vllm_endpoint,
    probe_vllm_metrics,
)
from sparksim.fake_services import FakeService

T = 1.0  # the probe deadline used throughout
KINDS = ["vllm", "embeddings", "qdrant", "stt", "tts", "http"]


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def target(fake: FakeService, **fields) -> ProbeTarget:  # type: ignore[no-untyped-def]
    return ProbeTarget(key=fake.kind, kind=fake.kind, base_url=fake.url, **fields)


def probe(fake: FakeService, *, deep: bool = False, timeout: float = T, **fields) -> ProbeOutcome:  # type: ignore[no-untyped-def]
    async def go() -> ProbeOutcome:
        async with probe_client(size=1, timeout=timeout) as client:
            return await probe_service(client, target(fake, **fields), timeout=timeout, deep=deep)

    return run(go())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("deep", [False, True], ids=["status", "deep"])
def test_each_kind_is_up_when_healthy(farm, kind, deep):
    fake = farm.add(kind)
    outcome = probe(fake, deep=deep)
    assert outcome.status == "up", outcome
    assert outcome.latency_ms is not None and outcome.latency_ms < T * 1000


def test_deep_probes_do_real_work(farm):
    fakes = {kind: farm.add(kind) for kind in KINDS}
    for fake in fakes.values():
        probe(fake, deep=True)
    assert "POST /v1/completions" in fakes["vllm"].log
    assert "POST /v1/embeddings" in fakes["embeddings"].log
    assert "GET /collections" in fakes["qdrant"].log
    assert "POST /v1/audio/transcriptions" in fakes["stt"].log
    assert "POST /v1/audio/speech" in fakes["tts"].log
    # the status sweep stays cheap: no real work
    for fake in fakes.values():
        fake.reset_counts()
        probe(fake)
    assert all(line.startswith("GET ") for fake in fakes.values() for line in fake.log)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_down_when_its_port_is_closed(farm, kind):
    outcome = probe(farm.add(kind, mode="refuse"))
    assert outcome.status == "down"
    assert "refused" in outcome.detail


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_down_on_a_server_error(farm, kind):
    outcome = probe(farm.add(kind, mode="error"))
    assert outcome.status == "down"
    assert "HTTP 500" in outcome.detail


@pytest.mark.parametrize("mode", ["hang", "slow-drip"])
@pytest.mark.parametrize("deep", [False, True], ids=["status", "deep"])
def test_hung_and_slow_drip_services_are_down_within_the_deadline(farm, mode, deep):
    fake = farm.add("vllm", mode=mode)
    started = time.perf_counter()
    outcome = probe(fake, deep=deep)
    elapsed = time.perf_counter() - started
    assert outcome.status == "down"
    assert f"no answer within {T:g} s" in outcome.detail
    assert elapsed <= 1.10 * T
    assert fake.requests == 1


def test_slow_drip_would_outlast_httpx_timeouts_without_the_deadline(farm):
    """The reason for the overall deadline: the per-phase read timeout never fires on a dripping server."""
    fake = farm.add("http", mode="slow-drip")

    async def bare() -> str:
        async with httpx.AsyncClient(timeout=httpx.Timeout(T), trust_env=False) as client:
            try:
                async with asyncio.timeout(3 * T):
                    await client.get(fake.url)
            except TimeoutError:
                return "still reading after 3x the timeout"
            except httpx.TimeoutException:
                return "httpx timed out"
        return "answered"

    assert run(bare()) == "still reading after 3x the timeout"


def test_vllm_serving_another_model_is_degraded(farm):
    fake = farm.add("vllm", mode="wrong-model", model="sim/tiny-model")
    outcome = probe(fake, models=("sim/tiny-model",))
    assert outcome.status == "degraded"
    assert outcome.detail.startswith("wrong model")
    assert "sim/other-model" in outcome.detail


def test_vllm_expected_model_matches(farm):
    fake = farm.add("vllm", model="gemma")

    async def go() -> ProbeOutcome:
        async with probe_client(size=1, timeout=T) as client:
            return await probe_vllm_endpoint(client, fake.url, expected_model="gemma", timeout=T, deep=True)

    outcome = run(go())
    assert outcome.status == "up"
    assert "gemma" in outcome.detail


@pytest.mark.parametrize("kind", ["vllm", "embeddings", "qdrant", "stt", "tts"])
def test_deep_check_that_hangs_is_degraded_while_the_cheap_check_is_up(farm, kind):
    fake = farm.add(kind, mode="wedged")
    assert probe(fake).status == "up"
    started = time.perf_counter()
    outcome = probe(fake, deep=True, timeout=0.3)
    assert time.perf_counter() - started <= 1.10 * 0.3
    assert outcome.status == "degraded", outcome
    assert "no answer within" in outcome.detail


def test_wedged_vllm_health_stays_green(farm):
    fake = farm.add("vllm", mode="wedged")
    assert httpx.get(f"{fake.url}/health", timeout=T, trust_env=False).status_code == 200
    outcome = probe(fake, deep=True, timeout=0.3)
    assert outcome.status == "degraded"
    assert outcome.detail.startswith("one-token completion")


def test_plain_http_expects_its_status(farm):
    fake = farm.add("http", status=204)

    async def go(expected: int) -> ProbeOutcome:
        async with probe_client(size=1, timeout=T) as client:
            return await probe_http(client, fake.url, path="/ping", expected_status=expected, timeout=T)

    assert run(go(204)).status == "up"
    assert run(go(200)).status == "degraded"
    assert fake.log == ["GET /ping", "GET /ping"]


def test_named_probes_take_their_paths(farm):
    qdrant, stt, tts, emb = farm.add("qdrant"), farm.add("stt"), farm.add("tts"), farm.add("embeddings")

    async def go() -> list[ProbeOutcome]:
        async with probe_client(size=4, timeout=T) as client:
            return list(
                await asyncio.gather(
                    probe_qdrant(client, qdrant.url, health_path="/healthz", timeout=T, deep=True),
                    probe_stt(client, stt.url, models=["parakeet"], timeout=T, deep=True),
                    probe_tts(client, tts.url, timeout=T, deep=True),
                    probe_embeddings(client, emb.url, timeout=T, deep=True),
                )
            )

    assert [o.status for o in run(go())] == ["up"] * 4
    assert qdrant.log == ["GET /healthz", "GET /collections"]
    assert stt.log[0] == "GET /health"
    assert emb.log == ["GET /v1/models", "POST /v1/embeddings"]


def test_details_are_short_and_carry_no_url(farm):
    fake = farm.add("vllm", mode="refuse")
    outcomes = [
        probe(fake),
        probe(farm.add("vllm", mode="hang"), timeout=0.2),
        probe(farm.add("vllm", mode="error")),
        probe(farm.add("vllm", mode="wrong-model"), models=("x",)),
    ]
    for outcome in outcomes:
        assert "127.0.0.1" not in outcome.detail and "http" not in outcome.detail
        assert len(outcome.detail) <= 200


def test_tcp_probe(farm):
    open_port, closed = farm.add("http"), farm.add("http", mode="refuse")
    assert run(probe_tcp("127.0.0.1", open_port.port, timeout=T)).status == "up"
    assert open_port.wait_for_connections(1) == 1 and open_port.requests == 0
    assert run(probe_tcp("127.0.0.1", closed.port, timeout=T)).status == "down"


def test_metrics_of_a_wedged_engine(farm):
    healthy, wedged = farm.add("vllm"), farm.add("vllm", mode="wedged")

    async def go(fake: FakeService) -> EngineMetrics | None:
        async with probe_client(size=1, timeout=0.3) as client:
            return await probe_vllm_metrics(client, fake.url, timeout=0.3)

    assert run(go(healthy)) == EngineMetrics(requests_running=0.0, generation_tokens=0.0)
    probe(healthy, deep=True)
    assert run(go(healthy)).generation_tokens == 1.0
    assert run(go(wedged)).requests_running == 1.0
    assert run(go(farm.add("vllm", mode="hang"))) is None
    assert run(go(farm.add("http"))) is None


def test_parse_vllm_metrics_sums_engines_and_ignores_lookalikes():
    text = """# HELP vllm:num_requests_running x
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
vllm:num_requests_running_total 99
vllm:generation_tokens_total{engine="0",model_name="m"} 1.5e3
vllm:generation_tokens_created{engine="0"} 17
"""
    assert parse_vllm_metrics(text) == EngineMetrics(requests_running=3.0, generation_tokens=1500.0)
    assert parse_vllm_metrics("vllm:num_requests_running 1\n") is None
    assert parse_vllm_metrics("") is None
