"""Webhooks: endpoints and secrets, the exact body and signatures, retries and the delivery log, admin, commands."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from audit.models import AuditEntry
from coordination.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from coordination.services import (
    DEFAULT_WEBHOOK_BACKOFF_S,
    webhook_backoff,
    webhook_delivery_resend,
    webhook_endpoint_create,
    webhooks_enqueue,
)
from coordination.tasks import webhook_deliver
from tests.coordination.scratch import run_scenario

pytestmark = pytest.mark.django_db

SWAP = {
    "id": "0b6f3c2e-9a4d-4d7e-8a41-3f1f6f0f9e11",
    "model": "tiny",
    "state": "ready",
    "started_at": "2026-06-17T12:00:00Z",
    "finished_at": "2026-06-17T12:02:03.400Z",
    "duration_s": 123.4,
    "error": None,
    "requested_by": "token:nightly",
    "lock_epoch": 7,
}
TASK_PATH = "coordination.tasks.webhook_deliver"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "COORDINATION.md"


def queued(delivery_id: int) -> list[DBTaskResult]:
    """Delivery tasks waiting in the queue for this delivery, oldest first."""
    results = DBTaskResult.objects.filter(task_path=TASK_PATH).order_by("enqueued_at")
    return [result for result in results if result.args_kwargs["args"][0] == delivery_id]


@pytest.fixture
def deliver(django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """Run one delivery attempt as the worker would, letting its on-commit enqueue happen."""

    def run(delivery_id: int, attempt: int) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            return webhook_deliver.call(delivery_id, attempt)

    return run


@pytest.fixture
def enqueue(django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    def run(event: str = "swap_complete", swap: dict | None = None) -> list[int]:
        with django_capture_on_commit_callbacks(execute=True):
            return webhooks_enqueue(event=event, swap=swap or SWAP)

    return run


# --- endpoints and secrets --------------------------------------------------------------------------------------------


def test_a_new_endpoint_gets_a_standard_webhooks_secret_kept_out_of_the_audit():
    endpoint, secret = webhook_endpoint_create(url="https://hooks.example.com/spark", actor="t")
    assert secret.startswith("whsec_") and endpoint.secret == secret
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 32
    Webhook(secret)  # the library accepts it
    _, other = webhook_endpoint_create(url="https://hooks.example.com/other", actor="t")
    assert other != secret
    assert endpoint.events == ["swap_complete", "swap_failed"]
    dumped = json.dumps(list(AuditEntry.objects.values()), default=str)
    assert "webhook.add" in dumped and secret not in dumped and other not in dumped


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "example.com/hook", "http:///nohost", "https://exa mple.com/", "javascript:alert(1)"]
)
def test_endpoint_urls_must_be_http_or_https_with_a_host(url):
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_create(url=url, actor="t")
    assert "url" in refused.value.message_dict
    assert not WebhookEndpoint.objects.exists()


def test_lan_host_names_and_ports_are_fine():
    endpoint, _ = webhook_endpoint_create(url="http://n8n:5678/webhook/spark", actor="t")
    assert endpoint.pk


@pytest.mark.parametrize("events", [[], ["swap_started"], ["swap_complete", "swap_complete"]])
def test_events_must_be_a_subset_of_the_known_ones(events):
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_create(url="https://hooks.example.com/x", events=events, actor="t")
    assert "events" in refused.value.message_dict


# --- enqueueing -------------------------------------------------------------------------------------------------------


def test_enqueue_makes_one_delivery_per_enabled_subscribed_endpoint(enqueue):
    both, _ = webhook_endpoint_create(url="https://a.example/h", actor="t")
    failures, _ = webhook_endpoint_create(url="https://b.example/h", events=["swap_failed"], actor="t")
    webhook_endpoint_create(url="https://c.example/h", enabled=False, actor="t")

    complete = enqueue("swap_complete")
    assert [WebhookDelivery.objects.get(pk=i).endpoint for i in complete] == [both]
    failed = enqueue("swap_failed")
    assert {WebhookDelivery.objects.get(pk=i).endpoint for i in failed} == {both, failures}
    event_ids = {WebhookDelivery.objects.get(pk=i).event_id for i in failed}
    assert len(event_ids) == 1  # one event, one id, whoever receives it
    for delivery_id in complete + failed:
        [task] = queued(delivery_id)
        assert task.queue_name == "webhooks" and task.args_kwargs["args"] == [delivery_id, 1]


def test_deliveries_are_enqueued_only_after_commit(django_capture_on_commit_callbacks):
    webhook_endpoint_create(url="https://a.example/h", actor="t")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        [delivery_id] = webhooks_enqueue(event="swap_complete", swap=SWAP)
        assert queued(delivery_id) == []
    assert len(callbacks) == 1 and queued(delivery_id) == []
    callbacks[0]()
    assert len(queued(delivery_id)) == 1


def test_no_endpoints_no_deliveries(enqueue):
    assert enqueue() == []


def test_unknown_events_are_refused():
    with pytest.raises(ValueError, match="swap_started"):
        webhooks_enqueue(event="swap_started", swap=SWAP)


# --- body and signatures, against a real receiver ---------------------------------------------------------------------


def test_body_and_signatures_verify(receiver, enqueue, deliver):
    endpoint, secret = webhook_endpoint_create(url=receiver.url, actor="t")
    [delivery_id] = enqueue("swap_complete", {**SWAP, "internal_note": "not part of the contract"})
    assert deliver(delivery_id, 1) == "delivered"

    [request] = receiver.requests
    body = json.loads(request.body)
    assert set(body) == {"event", "id", "occurred_at", "swap"}
    assert body["event"] == "swap_complete" and body["swap"] == SWAP
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert body["id"] == str(delivery.event_id)
    occurred_at = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00"))
    assert abs(timezone.now() - occurred_at) < timedelta(minutes=1)

    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["content-type"] == "application/json" and headers["x-spark-event"] == "swap_complete"
    assert headers["webhook-id"] == body["id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    # Standard Webhooks, verified by the library itself.
    assert Webhook(secret).verify(request.body, request.headers) == body
    # X-Spark-Signature: hex HMAC-SHA256 of the raw body, keyed with the whole secret string.
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert headers["x-spark-signature"] == f"sha256={expected}"

    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_endpoint_create(url=receiver.url + "2", actor="t")[1]).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body.replace(b"tiny", b"huge"), request.headers)

    [attempt] = WebhookAttempt.objects.filter(delivery_id=delivery_id)
    assert attempt.status_code == 200 and attempt.error == "" and attempt.number == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1 and delivery.next_attempt_at is None
    assert len(queued(delivery_id)) == 1  # the first attempt only: nothing more was scheduled
    assert endpoint.secret not in json.dumps(list(AuditEntry.objects.values()), default=str)


def docs_python_block(after: str) -> str:
    """The first ```python block after the line containing `after` in docs/COORDINATION.md."""
    text = DOCS.read_text()
    start = text.index("```python", text.index(after)) + len("```python")
    return text[start : text.index("```", start)]


def test_the_verification_code_in_the_docs_works(receiver, enqueue, deliver):
    _, secret = webhook_endpoint_create(url=receiver.url, actor="t")
    [delivery_id] = enqueue()
    deliver(delivery_id, 1)
    [request] = receiver.requests
    namespace: dict = {}
    exec(docs_python_block("With the `standardwebhooks` library"), namespace)  # noqa: S102 - our own docs
    exec(docs_python_block("Without it"), namespace)  # noqa: S102
    assert namespace["verify"](request.body, request.headers, secret) == json.loads(request.body)
    assert namespace["verify_spark_signature"](request.body, request.headers, secret)
    assert namespace["verify_standard_signature"](request.body, request.headers, secret)
    tampered = request.body.replace(b"ready", b"fails")
    assert not namespace["verify_spark_signature"](tampered, request.headers, secret)
    assert not namespace["verify_standard_signature"](tampered, request.headers, secret)
    other_secret = webhook_endpoint_create(url=receiver.url + "2", actor="t")[1]
    assert not namespace["verify_standard_signature"](request.body, request.headers, other_secret)


def test_a_500_then_200_is_two_attempts_with_the_same_webhook_id_both_logged(receiver, enqueue, deliver):
    receiver.plan[:] = [500, 200]
    _, secret = webhook_endpoint_create(url=receiver.url, actor="t")
    [delivery_id] = enqueue()

    before = timezone.now()
    assert deliver(delivery_id, 1) == "retry"
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 1
    retry = queued(delivery_id)[-1]
    assert retry.args_kwargs["args"] == [delivery_id, 2]
    wait = (retry.run_after - before).total_seconds()
    assert DEFAULT_WEBHOOK_BACKOFF_S[1] - 1 < wait < DEFAULT_WEBHOOK_BACKOFF_S[1] + 5  # the default 30 s backoff
    assert abs((delivery.next_attempt_at - retry.run_after).total_seconds()) < 1

    assert deliver(delivery_id, 2) == "delivered"
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(delivery.event_id)
    assert first.body == second.body
    for request in (first, second):
        Webhook(secret).verify(request.body, request.headers)
    log = list(WebhookAttempt.objects.filter(delivery_id=delivery_id).values_list("number", "status_code", "error"))
    assert log == [(1, 500, "HTTP 500"), (2, 200, "")]
    assert WebhookDelivery.objects.get(pk=delivery_id).status == DeliveryStatus.DELIVERED

    # A stale or duplicate task for an attempt already made sends nothing.
    assert deliver(delivery_id, 2) == "skipped"
    assert len(receiver.requests) == 2


def test_retries_follow_the_configured_backoff_then_give_up(receiver, enqueue, deliver, settings):
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "WEBHOOK_BACKOFF_SECONDS": [0, 10, 100]}
    receiver.plan[:] = [503, 503, 503]
    webhook_endpoint_create(url=receiver.url, actor="t")
    [delivery_id] = enqueue()
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.max_attempts == 3
    waits = []
    for attempt, outcome in [(1, "retry"), (2, "retry"), (3, "failed")]:
        before = timezone.now()
        assert deliver(delivery_id, attempt) == outcome
        if outcome == "retry":
            waits.append(round((queued(delivery_id)[-1].run_after - before).total_seconds()))
    assert waits == [10, 100]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 3 and delivery.next_attempt_at is None
    assert len(queued(delivery_id)) == 3 and len(receiver.requests) == 3


def test_an_unreachable_receiver_is_logged_as_an_error(enqueue, deliver):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the attempt: nothing listens there
    webhook_endpoint_create(url=f"http://127.0.0.1:{port}/hook", actor="t")
    [delivery_id] = enqueue()
    assert deliver(delivery_id, 1) == "retry"
    [attempt] = WebhookAttempt.objects.filter(delivery_id=delivery_id)
    assert attempt.status_code is None and "ConnectError" in attempt.error


def test_a_hanging_receiver_times_out_after_5_seconds(receiver, enqueue, deliver):
    receiver.plan[:] = ["hang"]
    webhook_endpoint_create(url=receiver.url, actor="t")
    started = time.monotonic()
    [delivery_id] = enqueue()
    assert time.monotonic() - started < 0.5  # enqueueing never waits for the receiver
    assert deliver(delivery_id, 1) == "retry"
    elapsed = time.monotonic() - started
    [attempt] = WebhookAttempt.objects.filter(delivery_id=delivery_id)
    assert attempt.error.startswith("timed out") and 4500 <= attempt.latency_ms <= 6500, attempt.latency_ms
    assert elapsed < 7


def test_a_bad_backoff_setting_falls_back_to_the_default(settings, caplog):
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "WEBHOOK_BACKOFF_SECONDS": "soon"}
    assert webhook_backoff() == list(DEFAULT_WEBHOOK_BACKOFF_S)
    assert "WEBHOOK_BACKOFF_SECONDS" in caplog.text
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "WEBHOOK_BACKOFF_SECONDS": [0, -5]}
    assert webhook_backoff() == list(DEFAULT_WEBHOOK_BACKOFF_S)
    assert len(DEFAULT_WEBHOOK_BACKOFF_S) == 6 and 3000 <= sum(DEFAULT_WEBHOOK_BACKOFF_S) <= 4500  # about an hour


def test_an_endpoint_disabled_after_enqueue_is_not_sent_to(receiver, enqueue, deliver):
    endpoint, _ = webhook_endpoint_create(url=receiver.url, actor="t")
    [delivery_id] = enqueue()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)
    assert deliver(delivery_id, 1) == "failed"
    assert receiver.requests == []
    assert WebhookAttempt.objects.get(delivery_id=delivery_id).error.startswith("not sent")


def test_send_again_resends_the_same_event_id(receiver, enqueue, deliver, django_capture_on_commit_callbacks):
    receiver.plan[:] = [200, 200]
    webhook_endpoint_create(url=receiver.url, actor="t")
    [delivery_id] = enqueue()
    assert deliver(delivery_id, 1) == "delivered"
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    with django_capture_on_commit_callbacks(execute=True):
        webhook_delivery_resend(delivery=delivery, actor="staff")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.max_attempts == 1 + len(DEFAULT_WEBHOOK_BACKOFF_S)
    assert queued(delivery_id)[-1].args_kwargs["args"] == [delivery_id, 2]
    assert deliver(delivery_id, 2) == "delivered"
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(delivery.event_id)
    assert AuditEntry.objects.filter(action="webhook.resend", actor="staff").count() == 1


# --- a hanging receiver in the embedded set-up (API + worker in one process) ------------------------------------------


@pytest.mark.integration
def test_a_hanging_receiver_delays_neither_the_swap_side_nor_the_api(scratch_env):
    result = run_scenario(scratch_env, "hanging_receiver")
    timings = result["timings"]
    assert all(seconds < 0.5 for seconds in timings.values()), timings
    assert result["calls_done_within_s"] < 2.5  # all made while the receiver was still hanging
    assert result["statuses"]["POST /api/swap/lock"] == 201 and result["statuses"]["POST /api/schedule"] == 201
    attempt = result["attempt"]
    assert attempt is not None and attempt["error"].startswith("timed out"), result
    assert 4500 <= attempt["latency_ms"] <= 6500
    assert result["delivery"] == {"status": "pending", "attempts": 1, "retry_due": True}


# --- admin ------------------------------------------------------------------------------------------------------------


def test_admin_add_shows_the_secret_once(staff_client):
    response = staff_client.post(
        "/admin/coordination/webhookendpoint/add/",
        {"url": "https://hooks.example.com/a", "events": ["swap_complete"], "enabled": "on"},
        follow=True,
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["swap_complete"] and endpoint.secret.startswith("whsec_")
    assert endpoint.secret in response.content.decode()
    change = staff_client.get(f"/admin/coordination/webhookendpoint/{endpoint.pk}/change/")
    listing = staff_client.get("/admin/coordination/webhookendpoint/")
    assert change.status_code == listing.status_code == 200
    assert endpoint.secret not in change.content.decode() and endpoint.secret not in listing.content.decode()


def test_admin_rotate_secret_shows_the_new_one_once(staff_client):
    endpoint, old = webhook_endpoint_create(url="https://hooks.example.com/a", actor="t")
    response = staff_client.post(
        "/admin/coordination/webhookendpoint/",
        {"action": "rotate_secret", "_selected_action": [endpoint.pk]},
        follow=True,
    )
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.secret in response.content.decode()
    assert AuditEntry.objects.filter(action="webhook.rotate_secret").exists()


def test_admin_delivery_log_and_send_again(
    staff_client, receiver, enqueue, deliver, django_capture_on_commit_callbacks
):
    receiver.plan[:] = [500]
    webhook_endpoint_create(url=receiver.url, actor="t")
    [delivery_id] = enqueue()
    deliver(delivery_id, 1)
    page = staff_client.get(f"/admin/coordination/webhookdelivery/{delivery_id}/change/")
    assert page.status_code == 200
    assert "HTTP 500" in page.content.decode() and str(WebhookDelivery.objects.get().event_id) in page.content.decode()
    retry_in_30_s = queued(delivery_id)[-1]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/admin/coordination/webhookdelivery/",
            {"action": "send_again", "_selected_action": [delivery_id]},
            follow=True,
        )
    assert response.status_code == 200
    resend = queued(delivery_id)[-1]
    assert resend.pk != retry_in_30_s.pk and resend.args_kwargs["args"] == [delivery_id, 2]
    ready = set(DBTaskResult.objects.ready().values_list("pk", flat=True))
    assert resend.pk in ready and retry_in_30_s.pk not in ready  # at once, not after the backoff
    assert deliver(delivery_id, 2) == "delivered"
    assert len(receiver.requests) == 2


# --- manage.py webhook ------------------------------------------------------------------------------------------------


def webhook_cmd(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("webhook", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_webhook_command_add_list_remove():
    lines = webhook_cmd("add", "https://hooks.example.com/a", "--events", "swap_failed")
    endpoint = WebhookEndpoint.objects.get()
    assert lines[-1] == endpoint.secret and endpoint.events == ["swap_failed"]
    webhook_cmd("add", "https://hooks.example.com/b")
    listing = webhook_cmd("list")
    assert len(listing) == 2 and "https://hooks.example.com/a" in listing[0] and "swap_failed" in listing[0]
    assert all(endpoint.secret not in line for line in listing)
    webhook_cmd("remove", "https://hooks.example.com/a")
    webhook_cmd("remove", str(WebhookEndpoint.objects.get().pk))
    assert not WebhookEndpoint.objects.exists()
    with pytest.raises(CommandError, match="no webhook endpoint"):
        webhook_cmd("remove", "https://hooks.example.com/a")


@pytest.mark.parametrize("args", [["ftp://x.example/a"], ["https://x.example/a", "--events", "swap_started"]])
def test_webhook_command_refuses_bad_input(args):
    with pytest.raises(CommandError):
        webhook_cmd("add", *args)
    assert not WebhookEndpoint.objects.exists()
