"""Reads of the topology."""

from __future__ import annotations

from django.db.models import QuerySet

from cluster.models import ClusterSettings, Role, Service, SparkHost
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


def service_base_url(*, service: Service, cluster: ClusterSettings | None = None) -> str:
    """Where the service answers: its URL, or the node's address and the service (or vLLM) port."""
    if service.url:
        return service.url.rstrip("/")
    cluster = cluster or cluster_settings_get()
    host = SparkHost.objects.filter(enabled=True).filter(name=service.node).first()
    if host is None and service.node in (Role.HEAD, Role.WORKER):
        host = SparkHost.objects.filter(enabled=True, role=service.node).order_by("name").first()
    address = host.address if host else "127.0.0.1"
    port = service.port or cluster.effective_vllm_port
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"http://{address}:{port}"


def service_list() -> QuerySet[Service]:
    """Every service by key, disabled ones included (callers filter with service_is_disabled)."""
    return Service.objects.order_by("key")


def service_last_probe(*, service: Service) -> dict:
    """The latest probe result of a service; `unknown` until a probe has run."""
    return {"status": "unknown", "latency_ms": None, "checked_at": None, "detail": "not probed yet"}
