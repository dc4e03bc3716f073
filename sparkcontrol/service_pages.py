"""The page of one service (login required): its endpoint, a day of probe history as a chart, its last errors,
deep health, restarts and an optional link-out. The page renders the facts; static/dashboard/service.js reads
`GET /api/services/{key}/history` and draws the chart with the vendored uPlot (decision 0036)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

from cluster.models import Service, SparkHost
from cluster.selectors import (
    restart_out,
    service_base_url,
    service_endpoint_extras,
    service_host,
    service_is_disabled,
    service_last_probe,
    service_restart_list,
)

LOGIN_URL = "/login/"


@login_required(login_url=LOGIN_URL)
@ensure_csrf_cookie
def service_detail(request: HttpRequest, key: str) -> HttpResponse:
    """One service's page."""
    service = Service.objects.prefetch_related("statuses").filter(key=key).first()
    if service is None:
        raise Http404("no such service")
    hosts = list(SparkHost.objects.filter(enabled=True))
    extras = service_endpoint_extras(services=[service], hosts=hosts)[service.pk]
    host = service_host(service=service, hosts=hosts)
    page = {
        "key": service.key,
        "name": service.name,
        "kind": service.get_kind_display(),
        "url": service_base_url(service=service, hosts=hosts),
        "health_path": service.health_path,
        "node": service.node,
        "host": host.name if host else None,
        "container": service.container,
        "gpu": service.on_gpu,
        "disabled": service_is_disabled(service=service),
        "read_only": service.read_only,
        "models": service.models_served or [],
        "probe": service_last_probe(service=service),
        **extras,
    }
    state = {
        "key": service.key,
        "name": service.name,
        "staff": bool(request.user.is_staff or request.user.is_superuser),
        "restartable": extras["restartable"],
        "last_downtime_s": extras["last_downtime_s"],
        "restart": extras["restart"],
        "history_hours": settings.SERVICE_HISTORY_HOURS,
    }
    return render(
        request,
        "dashboard/service_detail.html",
        {
            "service": page,
            "restarts": [restart_out(row, service_key=service.key) for row in service_restart_list(service=service)],
            "state": state,
            "admin_url": reverse("admin:cluster_service_change", args=[service.pk]),
        },
    )
