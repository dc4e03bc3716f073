"""The dashboard's server side in-process (no browser): login, the embedded first state, the swap page, the CSP."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from cluster.services import cluster_settings_get, services_sync
from coordination.services import lock_acquire
from sparkcontrol.views import LOG_TAIL
from swaps.models import EventKind, Swap, SwapEvent, SwapState

MARKUP = "<img src=x onerror=alert(1)>"


def embedded_state(response) -> dict:  # type: ignore[no-untyped-def]
    found = re.search(r'<script id="dashboard-state" type="application/json">(.*?)</script>', response.text, re.S)
    assert found, "the page has no embedded state"
    return json.loads(found.group(1))


def swap_with_events(model_key: str, count: int, *, dry_run: bool = False, state: str = SwapState.READY) -> Swap:
    swap = Swap.objects.create(model_key=model_key, state=state, dry_run=dry_run, requested_by="test")
    SwapEvent.objects.bulk_create(
        SwapEvent(swap=swap, seq=seq, at=swap.created_at, kind=EventKind.LOG, state=state, message=f"line {seq}")
        for seq in range(1, count + 1)
    )
    return swap


@pytest.mark.django_db
def test_the_dashboard_needs_a_login_and_anyone_with_an_account_can_sign_in(django_user_model):
    client = Client()
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/"
    django_user_model.objects.create_user("viewer", "", "pw-viewer-123")  # not staff: the admin would refuse them
    page = client.get("/login/")
    assert page.status_code == 200
    signed_in = client.post("/login/", {"username": "viewer", "password": "pw-viewer-123", "next": "/"})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert "csrftoken" in dashboard.cookies  # the page's scripts send it back on POST and DELETE
    assert embedded_state(dashboard)["user"] == {"name": "viewer", "staff": False}


@pytest.mark.django_db
def test_the_first_state_has_enabled_models_and_services_only_and_the_latest_real_swap(staff_client, model_factory):
    services_sync()
    cluster = cluster_settings_get()
    cluster.disabled_services = "qdrant"
    cluster.save()
    model_factory("tiny", name=MARKUP)
    model_factory("retired", enabled=False)
    real = swap_with_events("tiny", LOG_TAIL + 20)
    swap_with_events("tiny", 3, dry_run=True)  # newer, but a dry run stays in the history only
    lock_acquire(holder=MARKUP, ttl_seconds=60, actor="test")

    response = staff_client.get("/")
    state = embedded_state(response)
    assert [model["key"] for model in state["models"]] == ["tiny"]
    assert "qdrant" not in [endpoint["key"] for endpoint in state["endpoints"]]
    assert "vllm" in [endpoint["key"] for endpoint in state["endpoints"]]
    assert state["shown"]["id"] == str(real.id)
    assert [event["seq"] for event in state["events"]] == list(range(21, LOG_TAIL + 21))  # the tail, in order
    assert len(state["history"]) == 2 and state["history"][0]["dry_run"] is True
    assert state["status"]["lock"]["holder"] == MARKUP and state["user"]["staff"] is True
    assert MARKUP not in response.text  # json_script escapes < and >: the state cannot close its script element


@pytest.mark.django_db
def test_the_swap_page_shows_the_whole_log_as_text(staff_client):
    swap = swap_with_events("tiny", 3)
    SwapEvent.objects.create(swap=swap, seq=4, at=swap.created_at, kind=EventKind.LOG, state="ready", message=MARKUP)
    response = staff_client.get(f"/swaps/{swap.id}/")
    assert response.status_code == 200
    assert re.findall(r'data-seq="(\d+)"', response.text) == ["1", "2", "3", "4"]
    assert MARKUP not in response.text and "&lt;img src=x onerror=alert(1)&gt;" in response.text
    assert staff_client.get("/swaps/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert staff_client.get("/swaps/not-a-uuid/").status_code == 404


@pytest.mark.django_db
def test_every_response_has_a_policy_without_inline_scripts(staff_client):
    for path in ("/", "/login/", "/admin/", "/api/health", "/static/dashboard/dashboard.js"):
        policy = staff_client.get(path)["Content-Security-Policy"]
        directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
        assert directives["script-src"] == ["'self'"], (path, policy)
        assert directives["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]
        assert directives["default-src"] == ["'self'"] and directives["object-src"] == ["'none'"]
    # The admin keeps an inline <style> on change lists; the dashboard needs none.
    assert "'unsafe-inline'" in staff_client.get("/admin/")["Content-Security-Policy"]
    assert "'unsafe-inline'" not in staff_client.get("/")["Content-Security-Policy"]


@pytest.mark.django_db
def test_a_refused_host_still_gets_a_policy():
    response = Client(HTTP_HOST="evil.example").get("/login/")
    assert response.status_code == 400
    assert "connect-src 'self';" in response["Content-Security-Policy"]
