"""Topology routes: the services and their last probe result, restarts, and each service's history."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja import Query, Router, Status
from ninja.errors import HttpError

from accounts.auth import admin_auth, read_auth
from cluster.models import Service, SparkHost
from cluster.restarts import RestartRefused, service_restart_request
from cluster.schemas import EndpointOut, RefusalOut, RestartAcceptedOut, ServiceHistoryOut
from cluster.selectors import (
    restart_out,
    service_base_url,
    service_endpoint_extras,
    service_history,
    service_is_disabled,
    service_last_probe,
    service_list,
    service_restart_list,
)
from cluster.services import cluster_settings_get

router = Router(tags=["topology"])


@router.get("/endpoints", response=list[EndpointOut], auth=read_auth)
def list_endpoints(request: HttpRequest) -> list[dict]:
    """Every service, disabled ones flagged, with the last probe result and its latest restart."""
    cluster = cluster_settings_get()
    hosts = list(SparkHost.objects.filter(enabled=True))
    services = list(service_list())
    extras = service_endpoint_extras(services=services, hosts=hosts)
    return [
        {
            "key": service.key,
            "name": service.name,
            "kind": service.kind,
            "url": service_base_url(service=service, cluster=cluster, hosts=hosts),
            "node": service.node,
            "disabled": service_is_disabled(service=service, cluster=cluster),
            "read_only": service.read_only,
            "probe": service_last_probe(service=service),
            **extras[service.pk],
        }
        for service in services
    ]


@router.post(
    "/services/{key}/restart",
    response={202: RestartAcceptedOut, frozenset({404, 409, 423}): RefusalOut},
    auth=admin_auth,
)
def post_restart(request: HttpRequest, key: str) -> Status:
    """Restart the service's container on its Spark (202); 404 unknown service, 409 no container (or the head
    vLLM: swap instead, or a restart already running), 423 the swap lock is held and the service is the GPU's."""
    try:
        restart = service_restart_request(key=key, requested_by=request.auth.name)
    except RestartRefused as exc:
        return Status(exc.status, {"detail": str(exc)})
    return Status(202, {"id": restart.pk, "state": restart.state})


@router.get("/services/{key}/history", response=ServiceHistoryOut, auth=read_auth)
def get_history(request: HttpRequest, key: str, hours: float = Query(24.0, gt=0, le=168)) -> dict:
    """The service's status samples over the last `hours` (at most what is kept), last errors, deep health and
    restarts."""
    service = Service.objects.filter(key=key).first()
    if service is None:
        raise HttpError(404, f"no service with key {key!r}")
    hours = min(hours, settings.SERVICE_HISTORY_HOURS)
    history = service_history(service=service, since=timezone.now() - timedelta(hours=hours))
    history["restarts"] = [restart_out(row, service_key=service.key) for row in service_restart_list(service=service)]
    return history
