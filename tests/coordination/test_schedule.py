"""The schedule registry: what external schedulers announce; stored and shown, never run."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.db import IntegrityError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordination.models import ScheduledJob
from realtime.broadcast import DASHBOARD_GROUP

pytestmark = pytest.mark.django_db

SCHEDULE = "/api/schedule"
VALID_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def job(**fields) -> dict:  # type: ignore[no-untyped-def]
    return {"id": "nightly-digest", "name": "Nightly digest", "owner": "cron@box1", "schedule": "0 3 * * *", **fields}


def test_schedule_routes_need_credentials_and_scopes(anon, reader, operator):
    assert anon.get(SCHEDULE).status_code == 401
    assert anon.post(SCHEDULE, job()).status_code == 401
    assert reader.get(SCHEDULE).status_code == 200
    assert reader.post(SCHEDULE, job()).status_code == 403
    assert operator.post(SCHEDULE, job()).status_code == 201
    assert reader.delete(f"{SCHEDULE}/nightly-digest").status_code == 403
    assert ScheduledJob.objects.count() == 1


def test_create_then_replace(operator, model_factory, clock):
    model_factory("tiny")
    response = operator.post(
        SCHEDULE, job(next_run="2026-06-18T03:00:00+00:00", model="tiny", description="swap to tiny, summarise")
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["id"] == "nightly-digest" and created["model"] == "tiny" and created["stale"] is False
    assert created["next_run"] == "2026-06-18T03:00:00+00:00"

    response = operator.post(SCHEDULE, job(name="Digest", schedule="every night"))
    assert response.status_code == 200, response.content
    replaced = response.json()
    assert replaced["name"] == "Digest" and replaced["schedule"] == "every night"
    # Replace means replace: the fields left out are cleared.
    assert replaced["next_run"] is None and replaced["model"] is None and replaced["description"] == ""
    assert replaced["created_at"] == created["created_at"]
    assert ScheduledJob.objects.count() == 1


def test_list_is_sorted_by_next_run_with_stale_marks(operator, reader, clock):
    at = clock.at
    entries = {
        "no-next-run": None,
        "in-an-hour": at + timedelta(hours=1),
        "23h-ago": at - timedelta(hours=23),
        "25h-ago": at - timedelta(hours=25),
        "tomorrow": at + timedelta(days=1),
    }
    for job_id, next_run in entries.items():
        body = job(id=job_id, next_run=next_run.isoformat() if next_run else None)
        assert operator.post(SCHEDULE, body).status_code == 201
    listing = reader.get(SCHEDULE).json()
    assert [item["id"] for item in listing] == ["25h-ago", "23h-ago", "in-an-hour", "tomorrow", "no-next-run"]
    assert {item["id"]: item["stale"] for item in listing} == {
        "25h-ago": True,
        "23h-ago": False,
        "in-an-hour": False,
        "tomorrow": False,
        "no-next-run": False,
    }
    clock.advance(3600 * 2)
    assert [item["id"] for item in reader.get(SCHEDULE).json() if item["stale"]] == ["25h-ago", "23h-ago"]


def test_a_next_run_without_offset_is_utc(operator):
    response = operator.post(SCHEDULE, job(next_run="2026-06-18T03:00:00"))
    assert response.status_code == 201
    assert response.json()["next_run"] == "2026-06-18T03:00:00+00:00"


def test_delete(operator):
    operator.post(SCHEDULE, job())
    assert operator.delete(f"{SCHEDULE}/nightly-digest").status_code == 204
    response = operator.delete(f"{SCHEDULE}/nightly-digest")
    assert response.status_code == 404 and "nightly-digest" in response.json()["detail"]
    assert not ScheduledJob.objects.exists()


@pytest.mark.parametrize(
    "job_id", ["", "-lead", ".lead", "Upper", "a" * 65, "with space", "slash/y", "ümlaut", "trailing\n", "tab\tx"]
)
def test_bad_ids_are_422_and_nothing_is_stored(operator, job_id):
    response = operator.post(SCHEDULE, job(id=job_id))
    assert response.status_code == 422, response.content
    assert "id" in response.json()["detail"]
    assert not ScheduledJob.objects.exists()


def test_the_longest_and_shortest_ids_are_fine(operator):
    assert operator.post(SCHEDULE, job(id="a" * 64)).status_code == 201
    assert operator.post(SCHEDULE, job(id="0")).status_code == 201
    assert operator.post(SCHEDULE, job(id="a.b_c-d")).status_code == 201


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "n" * 129}, "name"),
        ({"owner": "o" * 65}, "owner"),
        ({"schedule": "s" * 201}, "schedule"),
        ({"description": "d" * 2001}, "description"),
        ({"model": "m" * 65}, "model"),
        ({"model": "not-in-catalog"}, "model"),
        ({"name": ""}, "name"),
        ({"next_run": "tomorrowish"}, "next_run"),
        ({"next_run": 12.5e30}, "next_run"),
        ({"priority": 1}, "priority"),
    ],
)
def test_bad_fields_are_422_naming_the_field(operator, fields, field):
    response = operator.post(SCHEDULE, job(**fields))
    assert response.status_code == 422, response.content
    assert field in response.json()["detail"]
    assert not ScheduledJob.objects.exists()


@pytest.mark.parametrize("missing", ["id", "name", "owner", "schedule"])
def test_required_fields(operator, missing):
    body = job()
    del body[missing]
    response = operator.post(SCHEDULE, body)
    assert response.status_code == 422 and missing in response.json()["detail"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_id=st.text(max_size=80).filter(lambda text: not VALID_ID.fullmatch(text)))
def test_fuzzed_bad_ids_are_refused_and_nothing_is_stored(operator, job_id):
    response = operator.post(SCHEDULE, job(id=job_id))
    assert response.status_code == 422, (job_id, response.content)
    assert not ScheduledJob.objects.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_id=st.from_regex(VALID_ID, fullmatch=True))
def test_fuzzed_good_ids_are_stored(operator, job_id):
    response = operator.post(SCHEDULE, job(id=job_id))
    assert response.status_code == 201, (job_id, response.content)
    assert operator.delete(f"{SCHEDULE}/{job_id}").status_code == 204


def test_the_database_refuses_a_bad_id_too():
    with pytest.raises(IntegrityError), transaction.atomic():
        ScheduledJob.objects.create(id="Bad Id", name="n", owner="o", schedule="s")


def test_changes_are_pushed_to_dashboards(operator, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(DASHBOARD_GROUP, channel)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            operator.post(SCHEDULE, job(next_run="2026-06-18T03:00:00Z"))
        message = json.loads(async_to_sync(layer.receive)(channel)["text"])
        assert message["kind"] == "schedule" and message["op"] == "upsert"
        assert message["entry"]["id"] == "nightly-digest"
        assert message["entry"]["next_run"] == "2026-06-18T03:00:00+00:00"
        with django_capture_on_commit_callbacks(execute=True):
            operator.delete(f"{SCHEDULE}/nightly-digest")
        assert json.loads(async_to_sync(layer.receive)(channel)["text"]) == {
            "kind": "schedule",
            "op": "delete",
            "id": "nightly-digest",
        }
    finally:
        async_to_sync(layer.group_discard)(DASHBOARD_GROUP, channel)


def test_schedule_list_command(operator, clock):
    operator.post(SCHEDULE, job(id="later", next_run=(clock.at + timedelta(hours=5)).isoformat()))
    operator.post(SCHEDULE, job(id="old", next_run=(clock.at - timedelta(days=3)).isoformat()))
    operator.post(SCHEDULE, job(id="whenever"))
    out = io.StringIO()
    call_command("schedule", "list", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["old", "later", "whenever"]
    assert "STALE" in lines[0] and "STALE" not in lines[1]


def test_admin_lists_and_removes_entries(staff_client, operator):
    operator.post(SCHEDULE, job())
    listing = staff_client.get("/admin/coordination/scheduledjob/")
    assert listing.status_code == 200 and "nightly-digest" in listing.content.decode()
    response = staff_client.post(
        "/admin/coordination/scheduledjob/", {"action": "remove", "_selected_action": ["nightly-digest"]}, follow=True
    )
    assert response.status_code == 200
    assert not ScheduledJob.objects.exists()
