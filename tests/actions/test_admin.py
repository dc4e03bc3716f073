"""The admin: scheduled actions are edited with the model's validation; runs are read-only."""

from __future__ import annotations

import pytest

from actions.models import ActionRun, ScheduledAction
from audit.models import AuditEntry

pytestmark = pytest.mark.django_db

FORM = {
    "name": "nightly-swap",
    "enabled": "on",
    "cron": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "action": "swap",
    "model": "tiny",
    "service": "",
    "sweep": "",
    "when_locked": "wait",
    "wait_minutes": "15",
    "missed": "skip",
    "runs-TOTAL_FORMS": "0",
    "runs-INITIAL_FORMS": "0",
    "runs-MIN_NUM_FORMS": "0",
    "runs-MAX_NUM_FORMS": "0",
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cron", "0 25 * * *", "is not a valid cron expression"),
        ("timezone", "Europe/Atlantis", "is not an IANA time zone name"),
        ("model", "nope", "no catalog model with key"),
    ],
)
def test_the_add_form_refuses_bad_input_with_a_form_error(staff_client, model_factory, field, value, message):
    model_factory("tiny")
    response = staff_client.post("/admin/actions/scheduledaction/add/", {**FORM, field: value})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ScheduledAction.objects.exists()


def test_the_add_form_creates_the_action_with_its_next_run(staff_client, model_factory):
    model_factory("tiny")
    response = staff_client.post("/admin/actions/scheduledaction/add/", FORM)
    assert response.status_code == 302, response.content.decode()[:3000]
    action = ScheduledAction.objects.get()
    assert action.next_run is not None and action.when_locked == "wait" and action.wait_minutes == 15
    assert AuditEntry.objects.filter(action="action.create", target="nightly-swap", actor="staff").exists()
    page = staff_client.get(f"/admin/actions/scheduledaction/{action.pk}/change/")
    assert page.status_code == 200 and b'name="next_run"' not in page.content and b'name="name"' not in page.content


def test_runs_are_read_only(staff_client, model_factory):
    model_factory("tiny")
    staff_client.post("/admin/actions/scheduledaction/add/", FORM)
    action = ScheduledAction.objects.get()
    run = ActionRun.objects.create(action=action, scheduled_for=action.next_run, detail="a run")
    assert staff_client.get("/admin/actions/actionrun/").status_code == 200
    assert staff_client.get("/admin/actions/actionrun/add/").status_code == 403
    page = staff_client.get(f"/admin/actions/actionrun/{run.pk}/change/")
    assert page.status_code == 200 and b'name="detail"' not in page.content
    assert b"a run" in staff_client.get(f"/admin/actions/scheduledaction/{action.pk}/change/").content
