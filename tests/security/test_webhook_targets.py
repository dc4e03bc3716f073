"""Webhook URLs: credentials never shown (audit trail, admin lists, attempt errors), and targets on loopback,
link-local (cloud metadata), unspecified and private addresses refused, at registration and at delivery."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.test import Client

from audit.models import AuditEntry
from coordination.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from coordination.services import webhook_attempt, webhook_endpoint_create, webhooks_enqueue
from coordination.webhooks import webhook_url_redacted
from tests.coordination.receiver import serve_receiver

SWAP = {"id": "s1", "model": "tiny", "state": "ready"}


@pytest.fixture
def private(settings):  # type: ignore[no-untyped-def]
    def allow(value: bool) -> None:
        settings.SPARKCONTROL = {**settings.SPARKCONTROL, "WEBHOOK_ALLOW_PRIVATE": value}

    allow(False)
    return allow


def test_redaction_hides_userinfo_and_secret_query_values() -> None:
    shown = webhook_url_redacted("https://bob:hunter2@hooks.example.com:8443/h?token=abc&x=1")
    assert shown == "https://***@hooks.example.com:8443/h?token=***&x=1"


@pytest.mark.django_db
def test_credentials_never_reach_the_audit_trail_or_the_admin(private, admin_user) -> None:  # type: ignore[no-untyped-def]
    url = "https://bob:hunter2@hooks.example.com/spark?token=abc123"
    endpoint, _ = webhook_endpoint_create(url=url, actor="t")
    client = Client()
    client.force_login(admin_user)
    listing = client.get("/admin/coordination/webhookendpoint/")
    assert listing.status_code == 200 and b"hooks.example.com" in listing.content
    webhooks_enqueue(event="swap_complete", swap=SWAP)
    deliveries = client.get("/admin/coordination/webhookdelivery/")
    assert deliveries.status_code == 200 and b"hooks.example.com" in deliveries.content
    gone = client.post(
        "/admin/coordination/webhookendpoint/",
        {"action": "delete_selected", "_selected_action": [endpoint.pk], "post": "yes"},
    )
    assert not WebhookEndpoint.objects.exists(), gone.content[-3000:]
    history = client.get("/admin/").content  # the admin's "recent actions"
    trail = " ".join(f"{e.target} {e.detail}" for e in AuditEntry.objects.all())
    trail += " ".join(LogEntry.objects.values_list("object_repr", flat=True))
    assert "hooks.example.com" in trail
    for page in (listing.content, deliveries.content, history, trail.encode()):
        assert b"hunter2" not in page and b"abc123" not in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "http://127.8.9.10/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.20/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:8080/hook",
    ],
)
def test_internal_targets_are_refused_at_registration(private, url: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_create(url=url, actor="t")
    assert "url" in refused.value.message_dict
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_the_setting_allows_loopback_and_lan_but_never_metadata(private) -> None:  # type: ignore[no-untyped-def]
    private(True)
    webhook_endpoint_create(url="http://127.0.0.1:9000/hook", actor="t")
    webhook_endpoint_create(url="http://192.168.1.20/hook", actor="t")
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/hook", "http://0.0.0.0/hook"):
        with pytest.raises(ValidationError):
            webhook_endpoint_create(url=url, actor="t")


@pytest.mark.django_db(transaction=True)
def test_a_name_resolving_to_loopback_is_refused_at_delivery(private) -> None:  # type: ignore[no-untyped-def]
    with serve_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        endpoint, _ = webhook_endpoint_create(url="https://hooks.example.com/h", actor="t")
        # A name passes registration (it is resolved at delivery): here one that resolves to 127.0.0.1.
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=f"http://ops:pw-123@localhost:{port}/hook")
        [delivery_id] = webhooks_enqueue(event="swap_complete", swap=SWAP)
        assert webhook_attempt(delivery_id=delivery_id, attempt=1) == "failed"  # not retried
        attempt = WebhookAttempt.objects.get(delivery_id=delivery_id)
        assert "refused" in attempt.error and "127.0.0.1" in attempt.error and "pw-123" not in attempt.error
        assert receiver.requests == []
        assert WebhookDelivery.objects.get(pk=delivery_id).status == DeliveryStatus.FAILED

        # Allowed: it is delivered, to the address that was checked, with the URL's host name in Host.
        private(True)
        [delivery_id] = webhooks_enqueue(event="swap_complete", swap=SWAP)
        assert webhook_attempt(delivery_id=delivery_id, attempt=1) == "delivered"
        [request] = receiver.requests
        headers = {name.lower(): value for name, value in request.headers.items()}
        assert headers["host"] == f"localhost:{port}"
        assert headers["authorization"].startswith("Basic ")
