"""The dashboard: one page behind login, plus a read-only page per swap with its whole log.

The views only read. The page gets its first state embedded as JSON (the same shapes the REST API returns,
so the browser renders it with the code it uses for API answers and websocket messages); every change
afterwards comes from the `/ws/swaps/` websocket or the REST API, with the session and its CSRF token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import ensure_csrf_cookie

from catalog.api import model_out
from catalog.selectors import model_list
from cluster.models import SparkHost
from cluster.selectors import (
    service_base_url,
    service_endpoint_extras,
    service_is_disabled,
    service_last_probe,
    service_list,
)
from cluster.services import cluster_settings_get
from coordination.selectors import lock_status, schedule_list
from swaps.models import STEPS, TERMINAL_STATES, SwapEvent
from swaps.selectors import serving_get, swap_active, swap_events, swap_get, swap_history
from swaps.services import event_out, swap_out

LOGIN_URL = "/login/"
HISTORY_SIZE = 12
# The page starts with the tail of the shown swap's log; the browser fetches whatever comes after it.
LOG_TAIL = 500
# The swap page keeps following this long after the end: the runner records the last start-up lines after "ready".
FOLLOW_AFTER_END = timedelta(minutes=1)
# Generous: the runner keeps at most 5000 log events per swap, plus its state and progress lines.
DETAIL_EVENTS_MAX = 20000


def status_view() -> dict[str, Any]:
    """What is served now, the active swap and the lock: the `GET /api/status` shape."""
    serving = serving_get()
    active = swap_active()
    has_model = bool(serving and serving.model_key)
    return {
        "serving": {
            "model": serving.model_key if has_model else None,
            "served_model_name": serving.served_model_name or None if has_model else None,
            "since": serving.since.isoformat() if has_model and serving.since else None,
            "swap_id": str(serving.swap_id) if has_model and serving.swap_id else None,
        },
        "active_swap": swap_out(active) if active else None,
        "lock": lock_status(),
    }


def endpoints_view() -> list[dict[str, Any]]:
    """Every service with its disabled flag and last probe: the `GET /api/endpoints` shape."""
    cluster = cluster_settings_get()
    services = list(service_list())
    extras = service_endpoint_extras(services=services, hosts=list(SparkHost.objects.filter(enabled=True)))
    return [
        {
            "key": service.key,
            "name": service.name,
            "kind": service.kind,
            "url": service_base_url(service=service, cluster=cluster),
            "node": service.node,
            "disabled": service_is_disabled(service=service, cluster=cluster),
            "read_only": service.read_only,
            "probe": service_last_probe(service=service),
            **extras[service.pk],
        }
        for service in services
    ]


def swap_events_tail(*, swap_id: str, size: int) -> list[SwapEvent]:
    """The last `size` events of a swap, in order."""
    return list(reversed(SwapEvent.objects.filter(swap_id=swap_id).order_by("-seq")[:size]))


def events_reading_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as a log reads: the runner records the last start-up lines it still receives after the swap ended,
    and those belong above the state line that ends it, which stays last."""
    terminal = {str(state) for state in TERMINAL_STATES}
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if event["kind"] == "state":
            if event["state"] in terminal and index < len(events) - 1:
                return [*events[:index], *events[index + 1 :], event]
            break
    return events


def dashboard_state(*, request: HttpRequest) -> dict[str, Any]:
    """The page's first state; the browser keeps it current from the websocket."""
    status = status_view()
    history = swap_history(limit=HISTORY_SIZE)
    # The swap panel shows the active swap, else the latest real one (dry runs stay in the history).
    shown = status["active_swap"]
    if shown is None:
        shown = next((swap_out(swap) for swap in history if not swap.dry_run), None)
    events: list[dict[str, Any]] = []
    if shown is not None:
        events = [event_out(event) for event in swap_events_tail(swap_id=shown["id"], size=LOG_TAIL)]
    user = request.user
    return {
        "user": {"name": user.get_username(), "staff": bool(user.is_staff or user.is_superuser)},
        "status": status,
        "models": [model_out(entry) for entry in model_list(enabled_only=True)],
        "schedule": schedule_list(),
        "endpoints": [endpoint for endpoint in endpoints_view() if not endpoint["disabled"]],
        "history": [swap_out(swap) for swap in history],
        "shown": shown,
        "events": events,
        "steps": [str(step) for step in STEPS],
        "terminal": [str(state) for state in TERMINAL_STATES],
        "urls": {
            "swap_detail": reverse("swap-detail", args=["00000000-0000-0000-0000-000000000000"]),
            "service_detail": reverse("service-detail", args=["SERVICE-KEY"]),
        },
    }


@login_required(login_url=LOGIN_URL)
@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    """The dashboard page."""
    return render(request, "dashboard/index.html", {"state": dashboard_state(request=request)})


@login_required(login_url=LOGIN_URL)
def swap_detail(request: HttpRequest, swap_id: str) -> HttpResponse:
    """One swap: its fields, pre-flight checks, commands and whole event log."""
    swap = swap_get(swap_id=swap_id)
    if swap is None:
        raise Http404("no such swap")
    events = [event_out(event) for event in swap_events(swap=swap, after=0, limit=DETAIL_EVENTS_MAX)]
    shown_events = events_reading_order(events)
    return render(
        request,
        "dashboard/swap_detail.html",
        {
            "swap": swap_out(swap),
            "record": swap,
            "events": shown_events,
            "last_seq": events[-1]["seq"] if events else 0,
            "follow": not swap.is_terminal
            or swap.finished_at is None
            or swap.finished_at > timezone.now() - FOLLOW_AFTER_END,
            "admin_url": reverse("admin:swaps_swap_change", args=[swap.pk]),
        },
    )


class DashboardLoginView(LoginView):
    """Sign-in for everyone with an account (the admin's login page admits staff only)."""

    template_name = "dashboard/login.html"
    redirect_authenticated_user = True
