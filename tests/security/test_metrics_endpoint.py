"""`/metrics` in-process: who may read it, and that each family says what the rows say (outcomes, dry runs,
durations into buckets, the active swap's state, the lock, probes with disabled services left out, webhooks)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.tokens import apitoken_create
from cluster.models import ProbeStatus, Service, ServiceStatus
from cluster.services import cluster_settings_get
from coordination.models import DeliveryStatus, SwapLock, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from sparkcontrol import metrics
from swaps.models import ServingState, Swap, SwapState

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"


@pytest.fixture(autouse=True)
def metrics_token(settings):  # type: ignore[no-untyped-def]
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "METRICS_TOKEN": TOKEN}


def scrape(client, token: str = TOKEN) -> dict:  # type: ignore[no-untyped-def]
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def v(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def swap(state: str, *, seconds: float | None = None, dry_run: bool = False, model: str = "tiny", **fields) -> Swap:  # type: ignore[no-untyped-def]
    now = timezone.now()
    row = Swap.objects.create(model_key=model, state=state, dry_run=dry_run, requested_by="test", **fields)
    if seconds is not None:
        Swap.objects.filter(pk=row.pk).update(started_at=now - timedelta(seconds=seconds), finished_at=now)
    return row


def test_who_may_read(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics").headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Token {TOKEN}"}).status_code == 401
    for scope, status in (("read", 200), ("operate", 200), ("admin", 200), ("inference", 403)):
        _, plain = apitoken_create(name=f"m-{scope}", scope=scope)
        assert client.get("/metrics", headers={"Authorization": f"Bearer {plain}"}).status_code == status, scope
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_blank_metrics_token_setting_accepts_no_empty_bearer(client, settings):
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "METRICS_TOKEN": ""}
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401


def test_a_staff_session_alone_is_not_enough(staff_client):
    assert staff_client.get("/metrics").status_code == 401


def test_swap_outcomes_durations_and_the_active_state(client):
    swap(SwapState.READY, seconds=1.5)
    swap(SwapState.READY, seconds=45)
    swap(SwapState.FAILED, seconds=4000)
    swap(SwapState.READY, seconds=0.2, dry_run=True)
    swap(SwapState.INTERRUPTED, seconds=20)
    swap(SwapState.LOADING, active=True)
    samples = scrape(client)
    assert v(samples, "sparkcontrol_swaps_total", outcome="ready", dry_run="false") == 2
    assert v(samples, "sparkcontrol_swaps_total", outcome="ready", dry_run="true") == 1
    assert v(samples, "sparkcontrol_swaps_total", outcome="failed", dry_run="false") == 1
    assert v(samples, "sparkcontrol_swaps_total", outcome="interrupted", dry_run="false") == 1
    assert v(samples, "sparkcontrol_swaps_total", outcome="cancelled", dry_run="false") == 0
    # Dry runs stay out of the durations.
    assert v(samples, "sparkcontrol_swap_duration_seconds_count", outcome="ready") == 2
    assert v(samples, "sparkcontrol_swap_duration_seconds_sum", outcome="ready") == pytest.approx(46.5)
    assert v(samples, "sparkcontrol_swap_duration_seconds_bucket", outcome="ready", le="1.0") == 0
    assert v(samples, "sparkcontrol_swap_duration_seconds_bucket", outcome="ready", le="2.5") == 1
    assert v(samples, "sparkcontrol_swap_duration_seconds_bucket", outcome="ready", le="60.0") == 2
    assert v(samples, "sparkcontrol_swap_duration_seconds_bucket", outcome="failed", le="3600.0") == 0
    assert v(samples, "sparkcontrol_swap_duration_seconds_bucket", outcome="failed", le="+Inf") == 1
    assert v(samples, "sparkcontrol_swap_active") == 1
    assert v(samples, "sparkcontrol_swap_state", state="loading") == 1
    assert v(samples, "sparkcontrol_swap_state", state="queued") == 0
    assert v(samples, "sparkcontrol_swap_active_age_seconds") >= 0


def test_serving_and_lock(client):
    done = swap(SwapState.READY, seconds=3, model="qwen")
    since = timezone.now()
    ServingState.objects.create(pk=1, model_key="qwen", served_model_name="qwen-30b", since=since, swap=done)
    now = timezone.now()
    SwapLock.objects.create(
        pk=1, holder="nightly", token_hash="x" * 64, acquired_at=now, expires_at=now + timedelta(seconds=300), epoch=7
    )
    samples = scrape(client)
    assert v(samples, "sparkcontrol_serving_info", model="qwen", served_model_name="qwen-30b") == 1
    assert v(samples, "sparkcontrol_serving_since_timestamp_seconds") == pytest.approx(since.timestamp())
    assert v(samples, "sparkcontrol_lock_held") == 1
    assert v(samples, "sparkcontrol_lock_epoch") == 7
    assert 290 < v(samples, "sparkcontrol_lock_remaining_seconds") <= 300
    assert v(samples, "sparkcontrol_lock_holder_info", holder="nightly") == 1

    SwapLock.objects.filter(pk=1).update(expires_at=now - timedelta(seconds=1))
    samples = scrape(client)
    assert v(samples, "sparkcontrol_lock_held") == 0 and v(samples, "sparkcontrol_lock_epoch") == 7
    assert not [key for key in samples if key[0] == "sparkcontrol_lock_holder_info"]


def test_probes_leave_disabled_services_out(client):
    now = timezone.now()
    up = Service.objects.create(key="m-asr", name="ASR", kind="stt")
    down = Service.objects.create(key="m-tts", name="TTS", kind="tts")
    hidden = Service.objects.create(key="m-hidden", name="Hidden", kind="qdrant")
    ServiceStatus.objects.create(service=up, sweep="status", status=ProbeStatus.UP, latency_ms=12.5, checked_at=now)
    ServiceStatus.objects.create(service=down, sweep="status", status=ProbeStatus.DOWN, checked_at=now)
    ServiceStatus.objects.create(service=hidden, sweep="status", status=ProbeStatus.UP, checked_at=now)
    cluster = cluster_settings_get()
    cluster.disabled_services = "m-hidden"
    cluster.save()
    samples = scrape(client)
    assert v(samples, "sparkcontrol_probe_up", service="m-asr", sweep="status") == 1
    assert v(samples, "sparkcontrol_probe_latency_seconds", service="m-asr", sweep="status") == pytest.approx(0.0125)
    assert v(samples, "sparkcontrol_probe_up", service="m-tts", sweep="status") == 0
    assert v(samples, "sparkcontrol_probe_status", service="m-tts", sweep="status", status="down") == 1
    assert v(samples, "sparkcontrol_probe_checked_timestamp_seconds", service="m-tts", sweep="status") == pytest.approx(
        now.timestamp()
    )
    assert not [key for key in samples if ("service", "m-hidden") in key[1]]


def test_webhook_deliveries_by_outcome(client):
    endpoint = WebhookEndpoint.objects.create(url="http://receiver.example/hook", secret="whsec_x")
    for index, status in enumerate((DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)):
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            event="swap_complete",
            event_id=f"00000000-0000-0000-0000-00000000000{index}",
            payload={},
            status=status,
            attempts=1,
            max_attempts=6,
        )
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=1,
            at=timezone.now(),
            latency_ms=5,
            status_code=200 if status == DeliveryStatus.DELIVERED else 500,
        )
    samples = scrape(client)
    assert v(samples, "sparkcontrol_webhook_deliveries", event="swap_complete", outcome="delivered") == 2
    assert v(samples, "sparkcontrol_webhook_deliveries", event="swap_complete", outcome="failed") == 1
    assert v(samples, "sparkcontrol_webhook_deliveries", event="swap_failed", outcome="pending") == 0
    assert v(samples, "sparkcontrol_webhook_attempts_total", result="ok") == 2
    assert v(samples, "sparkcontrol_webhook_attempts_total", result="error") == 1


def test_openmetrics_when_asked(client):
    response = client.get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/openmetrics-text"}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


def test_an_unreadable_database_is_a_zero_not_a_500(client, monkeypatch):
    def broken(self):  # type: ignore[no-untyped-def]
        raise DatabaseError("connection refused")

    monkeypatch.setattr(metrics.DatabaseCollector, "_swaps", broken)
    samples = scrape(client)
    assert v(samples, "sparkcontrol_database_up") == 0
    assert not [key for key in samples if key[0].startswith("sparkcontrol_swap")]
