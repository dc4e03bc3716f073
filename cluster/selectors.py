"""Reads of the topology."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import QuerySet

from cluster.models import (
    ClusterSettings,
    HostStatus,
    ProbeResult,
    ProbeStatus,
    Role,
    Service,
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


def service_base_url(
    *, service: Service, cluster: ClusterSettings | None = None, hosts: Sequence[SparkHost] | None = None
) -> str:
    """Where the service answers: its URL, or the node's address and the service (or vLLM) port.

    `hosts` (the enabled Sparks, read once) spares a query per service when many are resolved together.
    """
    if service.url:
        return service.url.rstrip("/")
    cluster = cluster or cluster_settings_get()
    if hosts is None:
        host = SparkHost.objects.filter(enabled=True).filter(name=service.node).first()
        if host is None and service.node in (Role.HEAD, Role.WORKER):
            host = SparkHost.objects.filter(enabled=True, role=service.node).order_by("name").first()
    else:
        enabled = sorted((h for h in hosts if h.enabled), key=lambda h: h.name)
        host = next((h for h in enabled if h.name == service.node), None)
        if host is None and service.node in (Role.HEAD, Role.WORKER):
            host = next((h for h in enabled if h.role == service.node), None)
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
