"""`/metrics` scraped from two different web processes after a real swap: the values come from the database, so
both agree, and they match what happened (outcome counts, duration, serving model, lock, probes, webhooks)."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.coordination.receiver import serve_receiver
from tests.scaleout.deployment import METRICS_TOKEN, Deployment, bearer, wait_swap

pytestmark = [pytest.mark.integration, pytest.mark.scaleout]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str = METRICS_TOKEN) -> Samples:
    response = httpx.get(f"{url}/metrics", headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def database_only(samples: Samples) -> Samples:
    """The metrics read from the database (the same on every process); the runtime's own differ per process."""
    return {key: v for key, v in samples.items() if key[0].startswith("sparkcontrol_")}


MOVING = {"sparkcontrol_lock_remaining_seconds", "sparkcontrol_swap_active_age_seconds"}


def assert_processes_agree(first: str, second: str, attempts: int = 10) -> None:
    """The database's metrics read through `second` equal those read through `first` just before and just after.

    The load sampler and the periodic ticks keep writing (a load sample every 2 s): two scrapes a moment apart may
    straddle a write. Only a bracket in which `first` read the same twice compares `second` with it."""
    for _ in range(attempts):
        before = _steady(scrape(first))
        other = _steady(scrape(second))
        if _steady(scrape(first)) == before:
            assert other == before
            return
    raise AssertionError(f"the database's metrics kept moving for {attempts} tries; cannot compare the processes")


def _steady(samples: Samples) -> Samples:
    return {key: v for key, v in database_only(samples).items() if key[0] not in MOVING}


def test_metrics_after_a_real_swap_agree_across_processes(deployment: Deployment, sim):
    web1, web2, web3 = (deployment.procs[name] for name in ("web1", "web2", "web3"))
    token = deployment.api_token("metrics-swapper", "operate")
    before = scrape(web2.url)
    ready_before = value(before, "sparkcontrol_swaps_total", outcome="ready", dry_run="false")
    count_before = value(before, "sparkcontrol_swap_duration_seconds_count", outcome="ready")
    sum_before = value(before, "sparkcontrol_swap_duration_seconds_sum", outcome="ready")
    delivered_before = value(before, "sparkcontrol_webhook_deliveries", event="swap_complete", outcome="delivered")
    ok_before = value(before, "sparkcontrol_webhook_attempts_total", result="ok")

    with serve_receiver() as receiver:
        deployment.manage("webhook", "add", receiver.url, "--events", "swap_complete")
        try:
            grant = httpx.post(
                f"{web1.url}/api/swap/lock", json={"holder": "metrics-cron", "ttl_seconds": 600}, headers=bearer(token)
            ).json()
            response = httpx.post(
                f"{web1.url}/api/swap",
                json={"model": "alpha"},
                headers={**bearer(token), "X-Swap-Lock-Token": grant["token"]},
                timeout=10,
            )
            assert response.status_code == 202, response.text
            swap = wait_swap(web1.url, token, response.json()["id"], {"ready", "failed", "interrupted"})
            assert swap["state"] == "ready", swap["error"]
            receiver.wait_for(1, timeout=30)
            deployment.run("from cluster.sweeps import sweep_status\nsweep_status(keys=['vllm'])")
            # The delivery's result is written just after the receiver answered.
            for _ in range(100):
                after = scrape(web2.url)
                delivered = value(after, "sparkcontrol_webhook_deliveries", event="swap_complete", outcome="delivered")
                if delivered == delivered_before + 1:
                    break
                time.sleep(0.1)
        finally:
            deployment.manage("webhook", "remove", receiver.url)
            httpx.request(
                "DELETE", f"{web1.url}/api/swap/lock", headers={**bearer(token), "X-Swap-Lock-Token": grant["token"]}
            )

    assert value(after, "sparkcontrol_database_up") == 1
    assert value(after, "sparkcontrol_swaps_total", outcome="ready", dry_run="false") == ready_before + 1
    assert value(after, "sparkcontrol_swap_duration_seconds_count", outcome="ready") == count_before + 1
    took = value(after, "sparkcontrol_swap_duration_seconds_sum", outcome="ready") - sum_before
    assert took == pytest.approx(swap["duration_s"], abs=0.01)
    assert value(after, "sparkcontrol_swap_duration_seconds_bucket", outcome="ready", le="+Inf") == count_before + 1
    assert value(after, "sparkcontrol_swap_duration_seconds_bucket", outcome="ready", le="3600.0") == count_before + 1
    assert value(after, "sparkcontrol_swap_active") == 0
    assert all(v == 0 for (name, _), v in after.items() if name == "sparkcontrol_swap_state")
    assert value(after, "sparkcontrol_serving_info", model="alpha", served_model_name="alpha") == 1
    assert value(after, "sparkcontrol_lock_held") == 1
    assert value(after, "sparkcontrol_lock_epoch") == grant["epoch"] == swap["lock_epoch"]
    assert value(after, "sparkcontrol_lock_holder_info", holder="metrics-cron") == 1
    assert 0 < value(after, "sparkcontrol_lock_remaining_seconds") <= 600
    assert delivered == delivered_before + 1
    assert value(after, "sparkcontrol_webhook_attempts_total", result="ok") == ok_before + 1
    assert value(after, "sparkcontrol_probe_up", service="vllm", sweep="status") == 1
    assert value(after, "sparkcontrol_probe_status", service="vllm", sweep="status", status="up") == 1
    assert value(after, "sparkcontrol_probe_status", service="vllm", sweep="status", status="down") == 0
    assert 0 < value(after, "sparkcontrol_probe_latency_seconds", service="vllm", sweep="status") < 5
    # The default registry (the process's own metrics, the gateway's) is exposed too.
    assert any(name.startswith("process_") or name.startswith("python_") for name, _ in after)
    # Another process, another server (uvicorn), the same database values.
    assert_processes_agree(web2.url, web3.url)

    after_release = scrape(web1.url)
    assert value(after_release, "sparkcontrol_lock_held") == 0
    assert value(after_release, "sparkcontrol_lock_epoch") == grant["epoch"]


def test_metrics_need_a_metrics_token_or_a_read_token(deployment: Deployment):
    url = deployment.procs["web2"].url + "/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url).headers["www-authenticate"] == "Bearer"
    assert httpx.get(url, headers=bearer("not-the-token")).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Basic {METRICS_TOKEN}"}).status_code == 401
    assert httpx.get(url, headers=bearer(deployment.api_token("metrics-reader", "read"))).status_code == 200
    assert httpx.get(url, headers=bearer(deployment.api_token("metrics-inference", "inference"))).status_code == 403
    assert httpx.post(url, headers=bearer(METRICS_TOKEN)).status_code in (403, 405)
