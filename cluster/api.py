"""Topology routes: the services and their last probe result."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router

from accounts.auth import read_auth
from cluster.models import SparkHost
from cluster.schemas import EndpointOut
from cluster.selectors import service_base_url, service_is_disabled, service_last_probe, service_list
from cluster.services import cluster_settings_get

router = Router(tags=["topology"])


@router.get("/endpoints", response=list[EndpointOut], auth=read_auth)
def list_endpoints(request: HttpRequest) -> list[dict]:
    """Every service, disabled ones flagged, with the last probe result."""
    cluster = cluster_settings_get()
    hosts = list(SparkHost.objects.filter(enabled=True))
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
        }
        for service in service_list()
    ]
