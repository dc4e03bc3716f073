"""Writes: the swap lock and its gate, webhook endpoints and deliveries, and the schedule registry.

The swaps app calls two functions from here:
- `lock_gate(token=..., force=..., actor=...)` inside the transaction that creates a real swap; it returns the
  epoch the swap runs under or raises `LockHeld`;
- `webhooks_enqueue(event=..., swap=...)` after the swap's terminal state is committed and its slot released.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.transaction import TransactionManagementError

from audit.services import audit_record
from coordination import clock
from coordination.jsonformat import OffsetJSONEncoder
from coordination.models import (
    DeliveryStatus,
    ScheduledJob,
    SwapLock,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from coordination.selectors import lock_row, lock_view, schedule_view
from coordination.tasks import webhook_deliver
from coordination.webhooks import TargetRefused, webhook_target_resolve, webhook_url_check, webhook_url_redacted
from realtime.broadcast import broadcast_on_commit

logger = logging.getLogger(__name__)


LOCK_TARGET = "swap-lock"
LOCK_TOKEN_PREFIX = "sclk_"
TTL_MAX_SECONDS = 86400
WEBHOOK_TIMEOUT_S = 5.0
# Attempts refused for their target are not retried: only an operator's change makes them pass.
TARGET_REFUSED = "webhook target refused"
DEFAULT_WEBHOOK_BACKOFF_S = (0, 30, 120, 480, 1200, 1800)  # six attempts over about an hour
SWAP_FIELDS = ("id", "model", "state", "started_at", "finished_at", "duration_s", "error", "requested_by", "lock_epoch")


def _jsonable(value: Any) -> Any:
    """Datetimes, UUIDs and decimals as the API writes them; what goes to channel layers and JSON fields."""
    return json.loads(json.dumps(value, cls=OffsetJSONEncoder))


# --- swap lock --------------------------------------------------------------------------------------------------------


class LockHeld(Exception):
    """Someone else holds the lock and the request has neither its token nor a permitted force (HTTP 423)."""

    def __init__(self, holder: str, expires_at: datetime) -> None:
        super().__init__(f"the swap lock is held by {holder!r} until {expires_at.isoformat()}")
        self.holder = holder
        self.expires_at = expires_at


class LockTokenMismatch(Exception):
    """A release of a held lock without its token and without force (HTTP 403)."""


@dataclass(frozen=True)
class LockGrant:
    """What an acquire returns; the only place the plain token ever appears."""

    token: str
    holder: str
    acquired_at: datetime
    expires_at: datetime
    epoch: int


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_matches(lock: SwapLock, token: str | None) -> bool:
    if not token or not lock.token_hash:
        return False
    return hmac.compare_digest(lock.token_hash, _token_hash(token))


def _lock_for_update() -> SwapLock:
    """The lock row, locked until the transaction ends; created (free, epoch 0) on first use."""
    lock = lock_row(for_update=True)
    if lock is None:
        # ON CONFLICT DO NOTHING: two first-ever writers both end up locking the same single row.
        SwapLock.objects.bulk_create([SwapLock(pk=SwapLock.SINGLETON_ID)], ignore_conflicts=True)
        lock = SwapLock.objects.select_for_update().get(pk=SwapLock.SINGLETON_ID)
    return lock


def _lock_changed(lock: SwapLock, at: datetime) -> None:
    broadcast_on_commit({"kind": "lock", **_jsonable(lock_view(lock=lock, at=at))})


def lock_acquire(*, holder: str, ttl_seconds: int, token: str | None = None, actor: str) -> tuple[LockGrant, bool]:
    """Grant the lock if free or expired (new token, epoch + 1), extend it for its token; else raise LockHeld."""
    if not 1 <= len(holder) <= 64:
        raise ValidationError({"holder": "give 1 to 64 characters"})
    if not 1 <= ttl_seconds <= TTL_MAX_SECONDS:
        raise ValidationError({"ttl_seconds": f"give 1 to {TTL_MAX_SECONDS} seconds"})
    with transaction.atomic():
        lock = _lock_for_update()
        at = clock.now()
        expires_at = at + timedelta(seconds=ttl_seconds)
        if lock.is_held(at):
            if not _token_matches(lock, token):
                raise LockHeld(lock.holder, lock.expires_at)
            lock.expires_at = expires_at
            lock.save(update_fields=["expires_at", "updated_at"])
            audit_record(
                actor=actor,
                action="lock.extend",
                target=LOCK_TARGET,
                detail={"holder": lock.holder, "epoch": lock.epoch, "ttl_seconds": ttl_seconds},
            )
            _lock_changed(lock, at)
            grant = LockGrant(str(token), lock.holder, lock.acquired_at, lock.expires_at, lock.epoch)
            return grant, False
        plain = LOCK_TOKEN_PREFIX + secrets.token_urlsafe(32)
        lock.holder, lock.token_hash, lock.acquired_at, lock.expires_at = holder, _token_hash(plain), at, expires_at
        lock.epoch += 1
        lock.forced = False
        lock.full_clean()
        lock.save()
        audit_record(
            actor=actor,
            action="lock.acquire",
            target=LOCK_TARGET,
            detail={"holder": holder, "epoch": lock.epoch, "ttl_seconds": ttl_seconds},
        )
        _lock_changed(lock, at)
        return LockGrant(plain, holder, at, expires_at, lock.epoch), True


def lock_release(*, token: str | None, force: bool, actor: str) -> bool:
    """Release with the token, or by force (the caller checked the right to force); False if it was free.

    Raises LockTokenMismatch for a held lock without its token and without force. The epoch stays.
    """
    with transaction.atomic():
        lock = lock_row(for_update=True)
        at = clock.now()
        if lock is None or not lock.is_held(at):
            return False
        if _token_matches(lock, token):
            action, lock.forced = "lock.release", False
        elif force:
            action, lock.forced = "lock.force_release", True
        else:
            raise LockTokenMismatch("X-Swap-Lock-Token does not match the lock's token; only its holder may release it")
        detail = {"holder": lock.holder, "epoch": lock.epoch, "expires_at": lock.expires_at.isoformat()}
        lock.clear()
        lock.save()
        audit_record(actor=actor, action=action, target=LOCK_TARGET, detail=detail)
        _lock_changed(lock, at)
        return True


def lock_release_held_by(*, holder: str, actor: str) -> bool:
    """Release the lock if `holder` holds it (an operator's shell releasing its own hold); False if it was free.

    Raises LockHeld if someone else holds it: taking a lock from its holder is a force-release. The epoch stays.
    """
    with transaction.atomic():
        lock = lock_row(for_update=True)
        at = clock.now()
        if lock is None or not lock.is_held(at):
            return False
        if lock.holder != holder:
            raise LockHeld(lock.holder, lock.expires_at)
        detail = {"holder": lock.holder, "epoch": lock.epoch, "expires_at": lock.expires_at.isoformat(), "by": "holder"}
        lock.forced = False
        lock.clear()
        lock.save()
        audit_record(actor=actor, action="lock.release", target=LOCK_TARGET, detail=detail)
        _lock_changed(lock, at)
        return True


def lock_gate(*, token: str | None, force: bool, actor: str) -> int:
    """THE gate for a real swap; call inside the transaction that creates the swap row. Returns the epoch.

    Reads the lock row once, locked until that transaction ends. A held, unexpired lock needs its token, or
    `force` (which the caller has authorised; it is audited as lock.force_swap); otherwise LockHeld.
    """
    if not transaction.get_connection().in_atomic_block:
        raise TransactionManagementError("lock_gate must run inside the transaction that creates the swap")
    lock = lock_row(for_update=True)
    if lock is None:
        return 0
    at = clock.now()
    if lock.is_held(at) and not _token_matches(lock, token):
        if not force:
            raise LockHeld(lock.holder, lock.expires_at)
        lock.forced = True
        lock.save(update_fields=["forced", "updated_at"])
        audit_record(
            actor=actor,
            action="lock.force_swap",
            target=LOCK_TARGET,
            detail={"holder": lock.holder, "epoch": lock.epoch, "expires_at": lock.expires_at.isoformat()},
        )
        _lock_changed(lock, at)
    return lock.epoch


# --- webhooks ---------------------------------------------------------------------------------------------------------


def webhook_secret_generate() -> str:
    """A new signing secret in the `whsec_<base64>` form Standard Webhooks libraries expect (24 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def webhook_sign(*, secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers of one delivery attempt (see CONTRACT.md, "Webhooks")."""
    spark = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{event_id}.{timestamp}.".encode() + body
    standard = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "X-Spark-Signature": f"sha256={spark}",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{standard}",
    }


def webhook_backoff() -> list[float]:
    """Delays before each attempt, in seconds (its length is the number of attempts); a bad setting is ignored."""
    value = getattr(settings, "SPARKCONTROL", {}).get("WEBHOOK_BACKOFF_SECONDS")
    if value is None:
        return list(DEFAULT_WEBHOOK_BACKOFF_S)
    if (
        isinstance(value, list | tuple)
        and 1 <= len(value) <= 20
        and all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 86400 for v in value)
    ):
        return [float(v) for v in value]
    logger.warning("SPARKCONTROL['WEBHOOK_BACKOFF_SECONDS']=%r is not a list of 1-20 delays; using the default", value)
    return list(DEFAULT_WEBHOOK_BACKOFF_S)


def _enqueue_attempt(delivery_id: int, attempt: int, delay_s: float) -> None:
    task = webhook_deliver
    if delay_s > 0:
        task = task.using(run_after=clock.now() + timedelta(seconds=delay_s))
    task.enqueue(delivery_id, attempt)


def _schedule_attempt(delivery: WebhookDelivery, delay_s: float) -> None:
    """Set when the next attempt is due and enqueue it after commit (a failing enqueue is logged, not raised)."""
    delivery.next_attempt_at = clock.now() + timedelta(seconds=delay_s)
    transaction.on_commit(partial(_enqueue_attempt, delivery.pk, delivery.attempts + 1, delay_s), robust=True)


def webhooks_enqueue(*, event: str, swap: dict[str, Any]) -> list[int]:
    """Record one delivery of `event` per enabled, subscribed endpoint and enqueue them; returns delivery ids.

    Call it after the swap's terminal state is committed and its slot released. It never sends anything itself.
    """
    if event not in WebhookEvent.values:
        raise ValueError(f"unknown webhook event {event!r}")
    event_id = uuid.uuid4()
    payload = _jsonable(
        {
            "event": event,
            "id": str(event_id),
            "occurred_at": clock.now(),
            "swap": {name: swap.get(name) for name in SWAP_FIELDS},
        }
    )
    backoff = webhook_backoff()
    ids = []
    with transaction.atomic():
        # Subscriptions are filtered here, not in SQL: JSON containment is not portable to SQLite.
        for endpoint in WebhookEndpoint.objects.filter(enabled=True):
            if event not in endpoint.events:
                continue
            delivery = WebhookDelivery.objects.create(
                endpoint=endpoint,
                event=event,
                event_id=event_id,
                payload=payload,
                max_attempts=len(backoff),
                next_attempt_at=clock.now() + timedelta(seconds=backoff[0]),
            )
            transaction.on_commit(partial(_enqueue_attempt, delivery.pk, 1, backoff[0]), robust=True)
            ids.append(delivery.pk)
    return ids


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    import httpx  # here: the HTTP client is ~5.5 MiB of every process, needed only where receivers are configured

    # The host's addresses are judged now, and the connection goes to the judged one: a name cannot pass the check
    # with one answer and be connected to with another. Host header and TLS name stay the URL's.
    target = httpx.URL(url)
    address = webhook_target_resolve(url)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    pinned = target.copy_with(host=address)
    with httpx.Client(timeout=WEBHOOK_TIMEOUT_S) as client:
        # Only the status matters; the body is never read. Redirects are not followed (httpx's default).
        with client.stream(
            "POST", pinned, content=body, headers={**headers, "Host": target.netloc.decode()}, extensions=extensions
        ) as response:
            return response.status_code


def _post_within_deadline(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST once; (status code, "") or (None, error). The whole attempt is bounded by WEBHOOK_TIMEOUT_S.

    httpx's timeout applies to each phase (connect, write, every read), so a receiver that trickles bytes could
    stretch it; the future's deadline bounds the attempt as a whole. An abandoned request thread ends by itself
    at httpx's next phase timeout.
    """
    import httpx

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-post")
    try:
        return pool.submit(_post, url, body, headers).result(timeout=WEBHOOK_TIMEOUT_S), ""
    except (FutureTimeout, httpx.TimeoutException):
        return None, f"timed out after {WEBHOOK_TIMEOUT_S:g} s"
    except TargetRefused as exc:
        return None, str(exc)[:500]
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}".replace(url, webhook_url_redacted(url))[:500]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def webhook_attempt(*, delivery_id: int, attempt: int) -> str:
    """Make attempt number `attempt` of a delivery and log it; on failure schedule the next one or give up.

    Returns delivered, retry, failed, or skipped (the delivery is settled or that attempt was already made,
    e.g. a "send again" overtook a scheduled retry).
    """
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id)
            .first()
        )
        if (
            delivery is None
            or delivery.status != DeliveryStatus.PENDING
            or delivery.attempts != attempt - 1
            or attempt > delivery.max_attempts
        ):
            return "skipped"
        delivery.attempts = attempt
        delivery.next_attempt_at = None
        delivery.save(update_fields=["attempts", "next_attempt_at"])
    endpoint = delivery.endpoint
    started, clock_start = clock.now(), time.monotonic()
    if endpoint.enabled and delivery.event in endpoint.events:
        body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "spark-control-webhook",
            "X-Spark-Event": delivery.event,
            **webhook_sign(
                secret=endpoint.secret, event_id=str(delivery.event_id), timestamp=int(time.time()), body=body
            ),
        }
        status_code, error = _post_within_deadline(endpoint.url, body, headers)
        if status_code is not None and not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
        retryable = not error.startswith(TARGET_REFUSED)
    else:
        status_code, error = None, "not sent: the endpoint is disabled or no longer subscribed to this event"
        retryable = False
    latency_ms = int((time.monotonic() - clock_start) * 1000)
    return _attempt_record(delivery_id, attempt, started, status_code, latency_ms, error, retryable=retryable)


def _attempt_record(
    delivery_id: int,
    attempt: int,
    started: datetime,
    status_code: int | None,
    latency_ms: int,
    error: str,
    *,
    retryable: bool,
) -> str:
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        WebhookAttempt.objects.create(
            delivery=delivery, number=attempt, at=started, status_code=status_code, latency_ms=latency_ms, error=error
        )
        if not error:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.DELIVERED, None
            outcome = "delivered"
        elif delivery.status != DeliveryStatus.PENDING or delivery.attempts != attempt:
            return "skipped"  # a newer attempt ("send again") owns the delivery now
        elif retryable and attempt < delivery.max_attempts:
            backoff = webhook_backoff()
            made_this_round = attempt - (delivery.max_attempts - len(backoff))
            _schedule_attempt(delivery, backoff[min(max(made_this_round, 1), len(backoff) - 1)])
            outcome = "retry"
        else:
            delivery.status = DeliveryStatus.FAILED
            outcome = "failed"
        delivery.save(update_fields=["status", "next_attempt_at"])
    log = logger.info if outcome == "delivered" else logger.warning
    log("webhook %s attempt %s to endpoint %s: %s", delivery.event_id, attempt, delivery.endpoint_id, error or "ok")
    return outcome


def webhook_delivery_resend(*, delivery: WebhookDelivery, actor: str) -> None:
    """Send a delivery again with the same event id, with a fresh round of attempts."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        backoff = webhook_backoff()
        delivery.status = DeliveryStatus.PENDING
        delivery.max_attempts = delivery.attempts + len(backoff)
        _schedule_attempt(delivery, 0)
        delivery.save(update_fields=["status", "max_attempts", "next_attempt_at"])
        audit_record(
            actor=actor, action="webhook.resend", target=str(delivery.event_id), detail={"delivery": delivery.pk}
        )


def webhook_endpoint_create(
    *, url: str, events: list[str] | None = None, enabled: bool = True, actor: str
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint with a new secret; returns it with the secret, which is shown this once."""
    endpoint = WebhookEndpoint(
        url=url, events=list(events) if events is not None else list(WebhookEvent.values), enabled=enabled
    )
    endpoint.secret = webhook_secret_generate()
    endpoint.full_clean()
    webhook_endpoint_check(endpoint=endpoint)
    endpoint.save()
    audit_record(
        actor=actor, action="webhook.add", target=webhook_url_redacted(url), detail={"events": endpoint.events}
    )
    return endpoint, endpoint.secret


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: str) -> str:
    """Give an endpoint a new secret and return it (shown this once); deliveries sign with it from now on."""
    endpoint.secret = webhook_secret_generate()
    endpoint.save(update_fields=["secret", "updated_at"])
    audit_record(actor=actor, action="webhook.rotate_secret", target=webhook_url_redacted(endpoint.url))
    return endpoint.secret


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: str) -> None:
    """Remove an endpoint and its delivery log."""
    url = endpoint.url
    endpoint.delete()
    audit_record(actor=actor, action="webhook.remove", target=webhook_url_redacted(url))


def webhook_endpoint_check(*, endpoint: WebhookEndpoint) -> None:
    """Refuse (ValidationError on `url`) an endpoint whose URL names an address webhooks may not go to."""
    try:
        webhook_url_check(endpoint.url)
    except ValidationError as exc:
        raise ValidationError({"url": exc.messages}) from None


# --- schedule registry ------------------------------------------------------------------------------------------------

SCHEDULE_FIELDS = ("name", "owner", "schedule", "next_run", "model", "description")


def schedule_upsert(*, data: dict[str, Any], actor: str) -> tuple[ScheduledJob, bool]:
    """Create or replace a registry entry (absent optional fields are cleared); returns (entry, created)."""
    values = {name: data.get(name) for name in SCHEDULE_FIELDS}
    values["model"] = values["model"] or ""
    values["description"] = values["description"] or ""
    next_run = values["next_run"]
    if isinstance(next_run, datetime) and next_run.tzinfo is None:
        values["next_run"] = next_run.replace(tzinfo=UTC)  # no offset given: UTC, the server's time zone
    candidate = ScheduledJob(id=data.get("id") or "", **values)
    candidate.full_clean(validate_unique=False)
    job, created = ScheduledJob.objects.update_or_create(id=candidate.id, defaults=values)
    audit_record(
        actor=actor,
        action="schedule.create" if created else "schedule.replace",
        target=job.id,
        detail={"owner": job.owner, "model": job.model},
    )
    broadcast_on_commit(
        {"kind": "schedule", "op": "upsert", "entry": _jsonable(schedule_view(job=job, at=clock.now()))}
    )
    return job, created


def schedule_delete(*, job_id: str, actor: str) -> bool:
    """Remove a registry entry; False when there was none."""
    deleted, _ = ScheduledJob.objects.filter(pk=job_id).delete()
    if deleted:
        audit_record(actor=actor, action="schedule.delete", target=job_id)
        broadcast_on_commit({"kind": "schedule", "op": "delete", "id": job_id})
    return bool(deleted)
