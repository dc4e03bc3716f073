"""Coordination records: the swap lock, webhook endpoints with their delivery log, and the schedule registry."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

# --- swap lock --------------------------------------------------------------------------------------------------------


class SwapLock(models.Model):
    """The cluster's one swap lock: holder, hashed token, expiry, and the fencing epoch (never decremented)."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    holder = models.CharField(max_length=64, blank=True, default="")
    token_hash = models.CharField(max_length=64, blank=True, default="", editable=False, help_text="SHA-256 hex.")
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    epoch = models.PositiveBigIntegerField(default=0, help_text="Grows by one with every new grant.")
    forced = models.BooleanField(default=False, help_text="The last release, or a swap since the grant, was forced.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "swap lock"
        constraints = [
            models.CheckConstraint(name="swaplock_singleton", condition=Q(id=1)),
            models.CheckConstraint(
                name="swaplock_grant_complete",
                condition=Q(token_hash="", holder="", acquired_at__isnull=True, expires_at__isnull=True)
                | (~Q(token_hash="") & ~Q(holder="") & Q(acquired_at__isnull=False, expires_at__isnull=False)),
                violation_error_message="A granted lock has a holder, a token and an expiry; a free one has none.",
            ),
        ]

    def __str__(self) -> str:
        return f"swap lock (epoch {self.epoch})"

    def is_held(self, at: datetime) -> bool:
        """Granted and not yet expired at `at`."""
        return bool(self.token_hash) and self.expires_at is not None and self.expires_at > at

    def clear(self) -> None:
        """Forget the grant; the epoch stays, so the next grant gets a fresh one."""
        self.holder, self.token_hash, self.acquired_at, self.expires_at = "", "", None, None


# --- webhooks ---------------------------------------------------------------------------------------------------------


class WebhookEvent(models.TextChoices):
    """What a webhook can announce."""

    SWAP_COMPLETE = "swap_complete", "swap complete"
    SWAP_FAILED = "swap_failed", "swap failed"


def default_events() -> list[str]:
    return list(WebhookEvent.values)


def validate_events(value: object) -> None:
    """A non-empty list of known event names, without repeats."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ValidationError("give a non-empty list of event names")
    unknown = sorted(set(value) - set(WebhookEvent.values))
    if unknown:
        raise ValidationError(f"unknown event(s) {', '.join(unknown)}; known: {', '.join(WebhookEvent.values)}")
    if len(set(value)) != len(value):
        raise ValidationError("an event is listed twice")


def validate_webhook_url(value: str) -> None:
    """An absolute http(s) URL with a host. Bare host names (`http://n8n:5678/hook`) are fine on a LAN."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValidationError(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("give an absolute http:// or https:// URL with a host")
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValidationError("a URL cannot contain spaces or control characters")


class WebhookEndpoint(models.Model):
    """A receiver of swap events: URL, subscribed events, on/off, and the signing secret (never shown again)."""

    url = models.CharField("URL", max_length=500, unique=True, validators=[validate_webhook_url])
    events = models.JSONField(default=default_events, validators=[validate_events])
    enabled = models.BooleanField(default=True)
    # Kept in clear because it keys the signatures; shown only on creation and on "rotate secret", never logged.
    secret = models.CharField(max_length=80, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook endpoint"
        ordering = ["url"]
        constraints = [models.CheckConstraint(name="webhookendpoint_has_secret", condition=~Q(secret=""))]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    """Where a delivery stands; delivered and failed ones are retried only by an explicit "send again"."""

    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    FAILED = "failed", "failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint: the payload (its id is the stable `webhook-id`) and where retries stand."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=32, choices=WebhookEvent.choices)
    event_id = models.UUIDField(db_index=True, editable=False, help_text="Sent as webhook-id; same on every retry.")
    payload = models.JSONField(editable=False)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts made so far (all rounds).")
    max_attempts = models.PositiveIntegerField(help_text="Give up after this attempt; 'send again' raises it.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhookdelivery_one_per_endpoint"),
            models.CheckConstraint(
                name="webhookdelivery_attempts_bounded", condition=Q(attempts__lte=models.F("max_attempts"))
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.event_id} -> {self.endpoint_id}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: when, the status code or the error, and how long it took."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["delivery_id", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhookattempt_number_unique")]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"


# --- schedule registry ------------------------------------------------------------------------------------------------

SCHEDULE_ID_PATTERN = r"\A[a-z0-9][a-z0-9._-]{0,63}\Z"  # \A and \Z mean the same in Python and PostgreSQL
validate_schedule_id = RegexValidator(
    re.compile(SCHEDULE_ID_PATTERN),
    "use 1-64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
)


class ScheduledJob(models.Model):
    """A job an external scheduler announced: what it will do and when. Stored and shown, never run."""

    id = models.CharField(primary_key=True, max_length=64, validators=[validate_schedule_id])
    name = models.CharField(max_length=128)
    owner = models.CharField(max_length=64)
    schedule = models.CharField(max_length=200, help_text="Cron text or words; shown as given.")
    next_run = models.DateTimeField(null=True, blank=True)
    model = models.CharField(max_length=64, blank=True, default="", help_text="Catalog key, if the job swaps.")
    description = models.CharField(max_length=2000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "scheduled job"
        ordering = [models.F("next_run").asc(nulls_last=True), "id"]
        constraints = [
            models.CheckConstraint(name="scheduledjob_id_format", condition=Q(id__regex=SCHEDULE_ID_PATTERN))
        ]

    def __str__(self) -> str:
        return self.id

    def clean(self) -> None:
        from catalog.models import ModelEntry

        if self.model and not ModelEntry.objects.filter(key=self.model).exists():
            raise ValidationError({"model": f"no catalog model with key {self.model!r}"})
