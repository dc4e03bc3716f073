"""The load sampler against the simulated cluster: real sshd (one command per Spark), the fake vLLM's /metrics
and the fake nvidia-smi, moved by load actually sent to the model."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from cluster.ssh import connection_pool
from swaps.models import SwapState
from swaps.runner import swap_run
from swaps.services import swap_request
from telemetry.models import LoadSample
from telemetry.services import load_sample_take

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

BATCH = 2  # the model's --max-num-seqs: requests beyond it wait
TOKENS = 64  # per request: 3.2 s of streaming on the fake vLLM, so a batch outlasts a sample on a busy machine


def _serve(model_factory) -> None:  # type: ignore[no-untyped-def]
    model_factory("tiny", repo="sim/tiny-model", vllm_args=["--max-num-seqs", str(BATCH)])
    swap = swap_request(model_key="tiny", dry_run=False, actor="test")
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    assert swap.state == SwapState.READY, swap.error


def _row(node: str) -> LoadSample:
    return LoadSample.objects.filter(node=node).latest("at")


def _engine_figures(port: int) -> tuple[float, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    figures = {}
    for line in text.splitlines():
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
            if line.startswith(name + "{"):
                figures[name] = float(line.rsplit(" ", 1)[1])
    return figures["vllm:num_requests_running"], figures["vllm:num_requests_waiting"]


def test_samples_follow_the_load_sent_to_the_model(topology, model_factory):
    connection_pool.clear()
    _serve(model_factory)
    head, worker = topology.head.name, topology.workers[0].name
    port = topology.vllm_port

    idle = load_sample_take(timeout=5.0)
    assert idle.nodes == sorted([head, worker]) and idle.engines == ["vllm"]
    first = _row(head)
    assert first.gpu_busy_percent == 0.0 and first.requests_running == 0.0 and first.requests_waiting == 0.0
    assert first.generation_tokens_per_second is None  # no earlier counter reading yet
    # The model holds the head's unified memory; the worker holds none of it.
    assert first.memory_used_bytes > _row(worker).memory_used_bytes > 0
    assert first.memory_total_bytes > first.memory_used_bytes and first.load_1m is not None
    assert _row("").gateway_held == 0.0

    def stream() -> None:
        body = {"model": "tiny", "prompt": "hello", "max_tokens": TOKENS, "stream": True}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=30) as response:
            for _ in response.iter_bytes():
                pass

    senders = [threading.Thread(target=stream) for _ in range(BATCH + 3)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 20
    while _engine_figures(port) != (BATCH, 3):
        assert time.monotonic() < deadline, f"the load never reached the engine: {_engine_figures(port)}"
        time.sleep(0.05)

    load_sample_take(timeout=5.0)
    busy = _row(head)
    # 3 wait while the first batch runs; if the sample was slower than a batch, 1 waits behind the second.
    assert busy.requests_running == BATCH and busy.requests_waiting in (1, 3)
    assert busy.gpu_busy_percent > 0 and _row(worker).gpu_busy_percent == 0.0
    assert busy.kv_cache_usage_percent > 0

    for sender in senders:
        sender.join(timeout=30)
    load_sample_take(timeout=5.0)
    after = _row(head)
    assert after.requests_running == 0 and after.requests_waiting == 0 and after.gpu_busy_percent == 0.0
    # Every token of the 5 requests was generated between the first sample and the last.
    generated = busy.generation_tokens_per_second * (busy.at - first.at).total_seconds() + (
        after.generation_tokens_per_second * (after.at - busy.at).total_seconds()
    )
    assert generated == pytest.approx((BATCH + 3) * TOKENS, abs=1)
    assert after.prompt_tokens_per_second is not None


def test_a_spark_that_does_not_answer_leaves_a_gap_not_a_failure(topology):
    connection_pool.clear()
    from cluster.models import SparkHost

    SparkHost.objects.filter(name=topology.workers[0].name).update(ssh_port=1)
    report = load_sample_take(timeout=2.0)
    assert report.nodes == [topology.head.name]
    assert not LoadSample.objects.filter(node=topology.workers[0].name).exists()
    assert report.read_s < 5


def test_a_two_node_model_keeps_both_gpus_busy(topology, model_factory):
    connection_pool.clear()
    model_factory("wide", repo="sim/tiny-model", nodes=2)
    swap = swap_request(model_key="wide", dry_run=False, actor="test")
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    assert swap.state == SwapState.READY, swap.error
    head, worker = topology.head.name, topology.workers[0].name
    body = {"model": "wide", "prompt": "hello", "max_tokens": 60, "stream": True}

    def stream() -> None:
        with httpx.stream("POST", f"http://127.0.0.1:{topology.vllm_port}/v1/completions", json=body, timeout=30) as r:
            for _ in r.iter_bytes():
                pass

    sender = threading.Thread(target=stream)
    sender.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            load_sample_take(timeout=5.0)
            if _row(head).requests_running == 1 and _row(worker).gpu_busy_percent:
                break
            assert time.monotonic() < deadline, "the worker's GPU never showed the batch"
            time.sleep(0.3)
        assert _row(head).gpu_busy_percent == _row(worker).gpu_busy_percent > 0
    finally:
        sender.join(timeout=30)
    deadline = time.monotonic() + 10
    while True:
        load_sample_take(timeout=5.0)
        if _row(worker).gpu_busy_percent == 0.0:
            break
        assert time.monotonic() < deadline, "the worker's GPU stayed busy after the batch ended"
        time.sleep(0.3)
