"""Reads of the topology."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db.models import Max, QuerySet

from cluster.models import (
    ClusterSettings,
    HostStatus,
    ProbeResult,
    ProbeStatus,
    RestartState,
    Role,
    Service,
    ServiceRestart,
    ServiceSample,
    ServiceStatus,
    SparkHost,
    SweepKind,
)
from cluster.services import cluster_settings_get


def spark_head() -> SparkHost | None:
    """The enabled head Spark, if one is configured."""
    return SparkHost.objects.filter(role=Role.HEAD, enabled=True).first()


def spark_workers() -> list[SparkHost]:
    """The enabled worker Sparks, by name."""
    return list(SparkHost.objects.filter(role=Role.WORKER, enabled=True).order_by("name"))


def service_is_disabled(*, service: Service, cluster: ClusterSettings | None = None) -> bool:
    """Disabled by the admin flag or listed in the cluster's disabled services."""
    cluster = cluster or cluster_settings_get()
    return not service.enabled or service.key in cluster.disabled_service_keys


def service_host(*, service: Service, hosts: Sequence[SparkHost] | None = None) -> SparkHost | None:
    """The enabled Spark the service runs on: the one its node names, else the first of that role (head/worker)."""
    if hosts is None:
        host = SparkHost.objects.filter(enabled=True).filter(name=service.node).first()
        if host is None and service.node in (Role.HEAD, Role.WORKER):
            host = SparkHost.objects.filter(enabled=True, role=service.node).order_by("name").first()
        return host
    enabled = sorted((h for h in hosts if h.enabled), key=lambda h: h.name)
    host = next((h for h in enabled if h.name == service.node), None)
    if host is None and service.node in (Role.HEAD, Role.WORKER):
        host = next((h for h in enabled if h.role == service.node), None)
    return host


def service_base_url(
    *, service: Service, cluster: ClusterSettings | None = None, hosts: Sequence[SparkHost] | None = None
) -> str:
    """Where the service answers: its URL, or the node's address and the service (or vLLM) port.

    `hosts` (the enabled Sparks, read once) spares a query per service when many are resolved together.
    """
    if service.url:
        return service.url.rstrip("/")
    cluster = cluster or cluster_settings_get()
    host = service_host(service=service, hosts=hosts)
    address = host.address if host else "127.0.0.1"
    port = service.port or cluster.effective_vllm_port
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"http://{address}:{port}"


def service_list() -> QuerySet[Service]:
    """Every service by key, disabled ones included (callers filter with service_is_disabled).

    The latest probe statuses come prefetched, so `service_last_probe` costs no query per service.
    """
    return Service.objects.order_by("key").prefetch_related("statuses")


def _probe_dict(row: ServiceStatus | ProbeResult | HostStatus) -> dict[str, Any]:
    return {"status": row.status, "latency_ms": row.latency_ms, "checked_at": row.checked_at, "detail": row.detail}


def _not_probed() -> dict[str, Any]:
    return {"status": ProbeStatus.UNKNOWN.value, "latency_ms": None, "checked_at": None, "detail": "not probed yet"}


def probe_summary(*, statuses: Iterable[ServiceStatus]) -> dict[str, Any]:
    """One tile's state from the latest row of each sweep kind.

    The status sweep says whether the service answers; a failed deep check (a one-token completion, an
    embedding, ...) degrades an `up` to `degraded`, since the cheap check alone cannot see a wedged engine.
    Connectivity results are not folded in: the status sweep already reaches the same port.
    """
    latest = {row.sweep: row for row in statuses}
    status_row, deep_row = latest.get(SweepKind.STATUS), latest.get(SweepKind.DEEP)
    base = status_row or deep_row
    if base is None:
        return _not_probed()
    summary = _probe_dict(base)
    if (
        status_row is not None
        and deep_row is not None
        and status_row.status == ProbeStatus.UP
        and deep_row.status in (ProbeStatus.DEGRADED, ProbeStatus.DOWN)
    ):
        summary["status"] = ProbeStatus.DEGRADED.value
        summary["detail"] = f"deep check: {deep_row.detail}"[:200]
    return summary


def service_last_probe(*, service: Service) -> dict[str, Any]:
    """The latest probe result of a service (see `probe_summary`); `unknown` until a probe has run."""
    return probe_summary(statuses=service.statuses.all())


def service_probe_history(*, service: Service, sweep: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The most recent probe results of a service, newest first."""
    rows = service.probe_results.all()
    if sweep:
        rows = rows.filter(sweep=sweep)
    return [
        {"sweep": row.sweep, **_probe_dict(row)}
        for row in rows.order_by("-checked_at", "-id")[: max(1, min(limit, 1000))]
    ]


def spark_reachability() -> list[dict[str, Any]]:
    """Each enabled Spark with its latest SSH reachability (`unknown` until a connectivity sweep has run)."""
    rows = []
    for host in SparkHost.objects.filter(enabled=True).select_related("reachability").order_by("role", "name"):
        latest = getattr(host, "reachability", None)
        probe = _probe_dict(latest) if latest is not None else _not_probed()
        rows.append({"name": host.name, "role": host.role, "probe": probe})
    return rows


def service_restart_latest(*, services: Sequence[Service]) -> dict[int, dict[str, Any]]:
    """Per service id: its latest restart (any state) and how long it was down at its last successful one.

    Two queries for any number of services: the newest row per service, and the newest `up` row per service.
    """
    ids = [service.pk for service in services]
    keys = {service.pk: service.key for service in services}
    latest: dict[int, dict[str, Any]] = {}
    newest = ServiceRestart.objects.filter(service_id__in=ids).values("service_id").annotate(last=Max("id"))
    for row in ServiceRestart.objects.filter(id__in=[item["last"] for item in newest]):
        latest[row.service_id] = {
            "restart": restart_out(row, service_key=keys[row.service_id]),
            "last_downtime_s": None,
        }
    newest_up = (
        ServiceRestart.objects.filter(service_id__in=ids, state=RestartState.UP)
        .values("service_id")
        .annotate(last=Max("id"))
    )
    for row in ServiceRestart.objects.filter(id__in=[item["last"] for item in newest_up]).only(
        "id", "service_id", "downtime_s"
    ):
        latest.setdefault(row.service_id, {"restart": None, "last_downtime_s": None})["last_downtime_s"] = (
            row.downtime_s
        )
    return latest


def service_endpoint_extras(*, services: Sequence[Service], hosts: Sequence[SparkHost]) -> dict[int, dict[str, Any]]:
    """What `GET /api/endpoints` adds to each service for restarts and its page: restartable (and why not), the
    latest restart, the last downtime, and the optional link-out."""
    latest = service_restart_latest(services=services)
    cluster = cluster_settings_get()
    extras = {}
    for service in services:
        refusal = service_restart_refusal(service=service, hosts=hosts, cluster=cluster)
        found = latest.get(service.pk, {"restart": None, "last_downtime_s": None})
        extras[service.pk] = {
            "restartable": refusal is None,
            "container": service.container or None,
            "restart": found["restart"],
            "last_downtime_s": found["last_downtime_s"],
            "link": service.link or None,
        }
    return extras


def service_restart_list(*, service: Service, limit: int = 20) -> list[ServiceRestart]:
    """The service's latest restarts, newest first."""
    return list(ServiceRestart.objects.filter(service=service).order_by("-requested_at", "-id")[: max(1, limit)])


def service_history(*, service: Service, since: datetime, errors: int = 20) -> dict[str, Any]:
    """The service page's data: status samples since `since` (oldest first, as columns for a chart), its last
    errors from every sweep kind (newest first), and its latest deep-health result."""
    samples = list(
        ServiceSample.objects.filter(service=service, checked_at__gte=since)
        .order_by("checked_at", "id")
        .values_list("checked_at", "status", "latency_ms")
    )
    bad = [ProbeStatus.DOWN, ProbeStatus.DEGRADED, ProbeStatus.UNKNOWN]
    error_rows = [
        {"at": at, "sweep": SweepKind.STATUS.value, "status": status, "detail": detail}
        for at, status, detail in ServiceSample.objects.filter(service=service, checked_at__gte=since, status__in=bad)
        .order_by("-checked_at", "-id")
        .values_list("checked_at", "status", "detail")[:errors]
    ]
    error_rows += [
        {"at": row.checked_at, "sweep": row.sweep, "status": row.status, "detail": row.detail}
        for row in service.probe_results.filter(status__in=bad)
        .exclude(sweep=SweepKind.STATUS)
        .order_by("-checked_at", "-id")[:errors]
    ]
    error_rows.sort(key=lambda row: row["at"], reverse=True)
    deep = service.statuses.filter(sweep=SweepKind.DEEP).first()
    return {
        "service": service.key,
        "since": since,
        "t": [at.timestamp() for at, _, _ in samples],
        "status": [status for _, status, _ in samples],
        "latency_ms": [latency for _, _, latency in samples],
        "errors": error_rows[:errors],
        "deep": _probe_dict(deep) if deep is not None else None,
    }


def _iso_time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def restart_out(restart: ServiceRestart, *, service_key: str | None = None) -> dict[str, Any]:
    """The API and websocket shape of a restart (times as ISO 8601 strings)."""
    return {
        "id": restart.pk,
        "service": service_key or restart.service.key,
        "state": restart.state,
        "container": restart.container,
        "host": restart.host,
        "requested_by": restart.requested_by,
        "requested_at": _iso_time(restart.requested_at),
        "stopping_at": _iso_time(restart.stopping_at),
        "started_at": _iso_time(restart.started_at),
        "finished_at": _iso_time(restart.finished_at),
        "downtime_s": restart.downtime_s,
        "error": restart.error,
    }


def service_restart_refusal(
    *, service: Service, hosts: Sequence[SparkHost] | None = None, cluster: ClusterSettings | None = None
) -> str | None:
    """Why this service has no restart (the head vLLM, no container, disabled, no Spark); None when it has one."""
    if service.is_head_vllm:
        return "the head vLLM is restarted only by a swap (POST /api/swap)"
    if not service.container:
        return f"service {service.key!r} has no container to restart (set `container` in services-overrides.yaml)"
    if service_is_disabled(service=service, cluster=cluster):
        return f"service {service.key!r} is disabled"
    if service_host(service=service, hosts=hosts) is None:
        return f"service {service.key!r}: no enabled Spark for its node {service.node or '(none)'!r}"
    return None
