"""`GET /metrics`: Prometheus metrics, read from the database at scrape time.

Swaps, the lock, probe results and webhook deliveries live in the database, and any of several web or worker
processes may have changed them; counters kept in one process's memory would be wrong as soon as there are
two. So a custom collector queries the rows on every scrape (a handful of aggregate queries), and every web
process answers with the same values. Metrics that really are per process (the gateway's, the Python
runtime's) are registered in prometheus-client's default REGISTRY by whoever owns them and exposed here too.

Access needs `Authorization: Bearer <SPARKCONTROL_METRICS_TOKEN>` or an API token with the read scope.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from accounts.models import SCOPE_RANK, TokenScope
from accounts.tokens import apitoken_verify

logger = logging.getLogger(__name__)

# Swap durations (started -> finished), seconds: a small model loads in well under a minute, a 2-node
# 120B model with torch.compile and CUDA graphs can take half an hour.
SWAP_DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


class DatabaseCollector(Collector):
    """Spark Control's state as Prometheus metrics, from the database rows at scrape time."""

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = [
                *self._swaps(),
                *self._lock(),
                *self._probes(),
                *self._webhooks(),
                *self._tasks(),
                *self._load(),
            ]
        except DatabaseError:
            logger.exception("metrics: the database could not be read")
            metrics = None
        up = GaugeMetricFamily("sparkcontrol_database_up", "1 when the database answered this scrape.")
        up.add_metric([], 0 if metrics is None else 1)
        yield up
        yield from metrics or ()

    # --- swaps ------------------------------------------------------------------------------------------------
    def _swaps(self) -> list[Metric]:
        from swaps.models import ACTIVE_STATES, TERMINAL_STATES, ServingState, Swap

        outcomes = CounterMetricFamily(
            "sparkcontrol_swaps",
            "Finished swaps by outcome (ready, failed, cancelled, interrupted); dry runs counted apart.",
            labels=["outcome", "dry_run"],
        )
        counts = _grouped_counts(Swap.objects.filter(state__in=TERMINAL_STATES), "state", "dry_run")
        for state in TERMINAL_STATES:
            for dry_run in (False, True):
                outcomes.add_metric([state.value, str(dry_run).lower()], counts.get((state, dry_run), 0))

        durations = HistogramMetricFamily(
            "sparkcontrol_swap_duration_seconds",
            "How long finished real (not dry-run) swaps took from start to their terminal state, by outcome.",
            labels=["outcome"],
        )
        timed = Swap.objects.filter(
            state__in=TERMINAL_STATES, dry_run=False, started_at__isnull=False, finished_at__isnull=False
        ).annotate(took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
        aggregates = {"n": Count("pk"), "total": Sum("took")}
        for index, bound in enumerate(SWAP_DURATION_BUCKETS):
            aggregates[f"le{index}"] = Count("pk", filter=Q(took__lte=timedelta(seconds=bound)))
        by_state = {row["state"]: row for row in timed.values("state").annotate(**aggregates).order_by()}
        for state in TERMINAL_STATES:
            row = by_state.get(state)
            if row is None:
                buckets = [(_bound(b), 0) for b in SWAP_DURATION_BUCKETS] + [("+Inf", 0)]
                durations.add_metric([state.value], buckets, 0.0)
                continue
            buckets = [(_bound(b), row[f"le{i}"]) for i, b in enumerate(SWAP_DURATION_BUCKETS)] + [("+Inf", row["n"])]
            total = row["total"].total_seconds() if row["total"] is not None else 0.0
            durations.add_metric([state.value], buckets, total)

        active = Swap.objects.filter(state__in=ACTIVE_STATES).order_by("created_at").first()
        state_gauge = GaugeMetricFamily(
            "sparkcontrol_swap_state",
            "1 for the state the active swap is in (all 0 when no swap runs).",
            labels=["state"],
        )
        for state in ACTIVE_STATES:
            state_gauge.add_metric([state.value], 1 if active is not None and active.state == state else 0)
        active_gauge = GaugeMetricFamily("sparkcontrol_swap_active", "1 while a swap is queued or running.")
        active_gauge.add_metric([], 1 if active is not None else 0)
        age = GaugeMetricFamily(
            "sparkcontrol_swap_active_age_seconds", "Seconds since the active swap was requested (0 when none)."
        )
        age.add_metric([], (timezone.now() - active.created_at).total_seconds() if active is not None else 0.0)

        serving = ServingState.objects.filter(pk=1).first()
        served = GaugeMetricFamily(
            "sparkcontrol_serving_info",
            "1, labelled with the catalog key and served name of the model vLLM serves now (absent when none).",
            labels=["model", "served_model_name"],
        )
        since = GaugeMetricFamily(
            "sparkcontrol_serving_since_timestamp_seconds", "When the served model became ready (unix time)."
        )
        if serving is not None and serving.model_key:
            served.add_metric([serving.model_key, serving.served_model_name], 1)
            if serving.since is not None:
                since.add_metric([], serving.since.timestamp())
        return [outcomes, durations, state_gauge, active_gauge, age, served, since]

    # --- the lock ---------------------------------------------------------------------------------------------
    def _lock(self) -> list[Metric]:
        from coordination.models import SwapLock

        lock = SwapLock.objects.filter(pk=SwapLock.SINGLETON_ID).first()
        now = timezone.now()
        held = lock is not None and lock.is_held(now)
        held_gauge = GaugeMetricFamily("sparkcontrol_lock_held", "1 while the swap lock is held and not expired.")
        held_gauge.add_metric([], 1 if held else 0)
        epoch = GaugeMetricFamily("sparkcontrol_lock_epoch", "The fencing epoch of the latest lock grant.")
        epoch.add_metric([], lock.epoch if lock is not None else 0)
        remaining = GaugeMetricFamily(
            "sparkcontrol_lock_remaining_seconds", "Seconds until the held lock expires (0 when free)."
        )
        remaining.add_metric([], max(0.0, (lock.expires_at - now).total_seconds()) if held else 0.0)
        holder = GaugeMetricFamily(
            "sparkcontrol_lock_holder_info",
            "1, labelled with the holder's name, while the lock is held.",
            labels=["holder"],
        )
        if held:
            holder.add_metric([lock.holder], 1)
        return [held_gauge, epoch, remaining, holder]

    # --- probes -----------------------------------------------------------------------------------------------
    def _probes(self) -> list[Metric]:
        from cluster.models import HostStatus, ProbeStatus, ServiceStatus
        from cluster.selectors import service_is_disabled
        from cluster.services import cluster_settings_get

        cluster = cluster_settings_get()
        status = GaugeMetricFamily(
            "sparkcontrol_probe_status",
            "1 for the latest probe status of each enabled service and sweep kind (up, degraded, down, unknown).",
            labels=["service", "sweep", "status"],
        )
        up = GaugeMetricFamily(
            "sparkcontrol_probe_up", "1 when the latest probe found the service up.", labels=["service", "sweep"]
        )
        latency = GaugeMetricFamily(
            "sparkcontrol_probe_latency_seconds",
            "Latency of the latest probe of each service and sweep kind.",
            labels=["service", "sweep"],
        )
        checked = GaugeMetricFamily(
            "sparkcontrol_probe_checked_timestamp_seconds",
            "When each service was last probed (unix time).",
            labels=["service", "sweep"],
        )
        rows = ServiceStatus.objects.select_related("service").order_by("service__key", "sweep")
        for row in rows:
            if service_is_disabled(service=row.service, cluster=cluster):
                continue  # disabled services are never probed and never shown
            labels = [row.service.key, row.sweep]
            for value in ProbeStatus.values:
                status.add_metric([*labels, value], 1 if row.status == value else 0)
            up.add_metric(labels, 1 if row.status == ProbeStatus.UP else 0)
            if row.latency_ms is not None:
                latency.add_metric(labels, row.latency_ms / 1000.0)
            checked.add_metric(labels, row.checked_at.timestamp())
        host_up = GaugeMetricFamily(
            "sparkcontrol_host_up", "1 when the latest SSH reachability check of the Spark succeeded.", labels=["host"]
        )
        host_latency = GaugeMetricFamily(
            "sparkcontrol_host_ssh_latency_seconds", "Latency of the latest SSH reachability check.", labels=["host"]
        )
        for row in HostStatus.objects.select_related("host").filter(host__enabled=True).order_by("host__name"):
            host_up.add_metric([row.host.name], 1 if row.status == ProbeStatus.UP else 0)
            if row.latency_ms is not None:
                host_latency.add_metric([row.host.name], row.latency_ms / 1000.0)
        return [status, up, latency, checked, host_up, host_latency]

    # --- webhooks ---------------------------------------------------------------------------------------------
    def _webhooks(self) -> list[Metric]:
        from coordination.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEvent

        deliveries = GaugeMetricFamily(
            "sparkcontrol_webhook_deliveries",
            "Webhook deliveries by outcome: pending (being retried), delivered, failed (gave up).",
            labels=["event", "outcome"],
        )
        counts = _grouped_counts(WebhookDelivery.objects.all(), "event", "status")
        for event in WebhookEvent.values:
            for outcome in DeliveryStatus.values:
                deliveries.add_metric([event, outcome], counts.get((event, outcome), 0))
        attempts = CounterMetricFamily(
            "sparkcontrol_webhook_attempts",
            "HTTP attempts of webhook deliveries: ok (2xx) or error (other status, timeout, refused).",
            labels=["result"],
        )
        ok = Q(status_code__gte=200, status_code__lt=300)
        totals = WebhookAttempt.objects.aggregate(ok=Count("pk", filter=ok), error=Count("pk", filter=~ok))
        attempts.add_metric(["ok"], totals["ok"] or 0)
        attempts.add_metric(["error"], totals["error"] or 0)
        return [deliveries, attempts]

    # --- the task queue ---------------------------------------------------------------------------------------
    def _tasks(self) -> list[Metric]:
        from django_tasks_db.models import DBTaskResult

        tasks = GaugeMetricFamily(
            "sparkcontrol_tasks",
            "Background task rows by queue and status (READY ones wait for a worker).",
            labels=["queue", "status"],
        )
        for (queue, status), n in _grouped_counts(DBTaskResult.objects.all(), "queue_name", "status").items():
            tasks.add_metric([queue, status], n)
        return [tasks]

    # --- load (the latest sample) -----------------------------------------------------------------------------
    def _load(self) -> list[Metric]:
        from telemetry.metrics import load_metric_families

        return load_metric_families()


def _grouped_counts(rows: QuerySet, *columns: str) -> dict[tuple[Any, ...], int]:
    """How many of the rows hold each combination of the columns' values (one GROUP BY query)."""
    return {
        tuple(row[column] for column in columns): row["n"]
        for row in rows.values(*columns).annotate(n=Count("pk")).order_by()
    }


def _bound(value: float) -> str:
    return repr(float(value))


class _Everything(Collector):
    """The default REGISTRY's metrics (the process's own, the gateway's) followed by the database ones."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from DatabaseCollector().collect()


def metrics_render(*, accept: str = "") -> tuple[bytes, str]:
    """The exposition text (or OpenMetrics, if asked for) and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Everything())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def metrics_authorised(*, request: HttpRequest) -> int:
    """200 when the request may read metrics, else the refusal status (401 no/bad credentials, 403 scope)."""
    header = request.headers.get("Authorization", "")
    kind, _, value = header.partition(" ")
    value = value.strip()
    if kind.lower() != "bearer" or not value:
        return 401
    configured = settings.SPARKCONTROL.get("METRICS_TOKEN", "")
    if configured and hmac.compare_digest(configured.encode(), value.encode()):
        return 200
    token = apitoken_verify(plain=value)
    if token is None:
        return 401
    if SCOPE_RANK.get(token.scope, 0) < SCOPE_RANK[TokenScope.READ]:
        return 403
    return 200


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape endpoint (GET); bearer token required."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"detail": "use GET"}, status=405)
        response["Allow"] = "GET, HEAD"
        return response
    status = metrics_authorised(request=request)
    if status == 401:
        response = JsonResponse(
            {"detail": "authentication required: 'Authorization: Bearer <metrics token or read-scope API token>'"},
            status=401,
        )
        response["WWW-Authenticate"] = "Bearer"
        return response
    if status == 403:
        return JsonResponse({"detail": "this token's scope cannot read metrics; give it the read scope"}, status=403)
    body, content_type = metrics_render(accept=request.headers.get("Accept", ""))
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
