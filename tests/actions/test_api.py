"""The scheduled-actions API: shapes, scopes, validation naming the field, 409, run now, runs newest first."""

from __future__ import annotations

import pytest

from actions.models import ActionRun, RunOutcome, ScheduledAction
from audit.models import AuditEntry
from cluster.models import Service

pytestmark = pytest.mark.django_db

BODY = {"name": "nightly-swap", "cron": "0 2 * * *", "timezone": "Europe/Berlin", "action": "swap", "model": "tiny"}


@pytest.fixture
def tiny(model_factory):  # type: ignore[no-untyped-def]
    return model_factory("tiny")


def test_create_returns_the_action_with_its_next_run(admin_api, tiny):
    response = admin_api.post("/api/actions", BODY)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["name"] == "nightly-swap" and data["model"] == "tiny" and data["when_locked"] == "skip"
    assert data["next_run"].endswith(("+00:00",)) and data["last_run"] is None
    action = ScheduledAction.objects.get(name="nightly-swap")
    local = action.next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (2, 0)
    assert AuditEntry.objects.filter(action="action.create", target="nightly-swap").exists()


def test_a_taken_name_is_409(admin_api, tiny):
    assert admin_api.post("/api/actions", BODY).status_code == 201
    response = admin_api.post("/api/actions", {**BODY, "cron": "5 * * * *"})
    assert response.status_code == 409 and "name" in response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "61 2 * * *"}, "cron"),
        ({"cron": "every night"}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"model": "nope"}, "model"),
        ({"model": None}, "model"),
        ({"action": "restart", "model": None, "service": "nope"}, "service"),
        ({"action": "sweep", "model": None}, "sweep"),
        ({"action": "explode"}, "action"),
        ({"name": "Bad Name"}, "name"),
        ({"wait_minutes": 0}, "wait_minutes"),
        ({"when_locked": "maybe"}, "when_locked"),
        ({"cron": "0 2 * * *\u0000"}, "cron"),
    ],
)
def test_bad_input_is_422_naming_the_field(admin_api, tiny, change, field):
    response = admin_api.post("/api/actions", {**BODY, **change})
    assert response.status_code == 422, response.content
    assert response.json()["detail"].startswith(f"{field}:"), response.json()
    assert not ScheduledAction.objects.exists()


def test_read_scope_reads_and_admin_scope_writes(reader, operator, admin_api, anon, tiny):
    assert anon.get("/api/actions").status_code == 401
    assert operator.post("/api/actions", BODY).status_code == 403
    assert admin_api.post("/api/actions", BODY).status_code == 201
    assert reader.get("/api/actions").json()[0]["name"] == "nightly-swap"
    assert reader.get("/api/actions/nightly-swap").status_code == 200
    assert reader.put("/api/actions/nightly-swap", {"enabled": False}).status_code == 403
    assert reader.post("/api/actions/nightly-swap/run").status_code == 403
    assert reader.delete("/api/actions/nightly-swap").status_code == 403
    assert reader.get("/api/actions/unknown").status_code == 404


def test_put_changes_the_given_fields_and_pausing_clears_the_next_run(admin_api, tiny):
    admin_api.post("/api/actions", BODY)
    paused = admin_api.put("/api/actions/nightly-swap", {"enabled": False}).json()
    assert paused["enabled"] is False and paused["next_run"] is None and paused["cron"] == "0 2 * * *"
    resumed = admin_api.put("/api/actions/nightly-swap", {"enabled": True, "cron": "30 3 * * *"}).json()
    assert resumed["next_run"] is not None and resumed["cron"] == "30 3 * * *"
    assert (
        admin_api.put("/api/actions/nightly-swap", {"timezone": "Nowhere/City"})
        .json()["detail"]
        .startswith("timezone:")
    )
    assert admin_api.put("/api/actions/nightly-swap", {"name": "other"}).status_code == 422
    # Changing the kind drops the swap's model.
    swept = admin_api.put("/api/actions/nightly-swap", {"action": "sweep", "sweep": "status"}).json()
    assert swept["action"] == "sweep" and swept["model"] is None


def test_restart_needs_a_known_service(admin_api):
    Service.objects.get_or_create(key="parakeet", defaults={"name": "Parakeet", "kind": "http", "port": 8000})
    body = {"name": "restart-asr", "cron": "0 4 * * 0", "action": "restart", "service": "parakeet"}
    assert admin_api.post("/api/actions", body).status_code == 201


def test_run_now_is_202_with_the_run_and_runs_are_newest_first(admin_api, reader, tiny):
    admin_api.post("/api/actions", BODY)
    first = admin_api.post("/api/actions/nightly-swap/run")
    second = admin_api.post("/api/actions/nightly-swap/run")
    assert first.status_code == 202 and set(first.json()) == {"run"}
    runs = reader.get("/api/actions/nightly-swap/runs").json()
    assert [run["id"] for run in runs] == [second.json()["run"], first.json()["run"]]
    assert set(runs[0]) >= {"id", "scheduled_for", "started_at", "finished_at", "outcome", "detail", "swap"}
    assert runs[0]["outcome"] == "running" and runs[0]["swap"] is None
    assert [run["id"] for run in reader.get("/api/actions/nightly-swap/runs?limit=1").json()] == [second.json()["run"]]
    page = reader.get(f"/api/actions/nightly-swap/runs?before={second.json()['run']}").json()
    assert [run["id"] for run in page] == [first.json()["run"]]
    assert reader.get("/api/actions/nightly-swap/runs?limit=0").status_code == 422


def test_delete_removes_the_action_and_its_runs(admin_api, tiny):
    admin_api.post("/api/actions", BODY)
    admin_api.post("/api/actions/nightly-swap/run")
    assert admin_api.delete("/api/actions/nightly-swap").status_code == 204
    assert not ScheduledAction.objects.exists() and not ActionRun.objects.exists()
    assert admin_api.delete("/api/actions/nightly-swap").status_code == 404


def test_the_schedule_command_lists_runs_pauses_and_resumes(admin_api, tiny, capsys):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    admin_api.post("/api/actions", BODY)
    call_command("schedule", "pause", "nightly-swap")
    assert capsys.readouterr().out.strip() == "nightly-swap: paused"
    call_command("schedule", "resume", "nightly-swap")
    assert "next run" in capsys.readouterr().out
    call_command("schedule", "run", "nightly-swap")
    assert "queued" in capsys.readouterr().out
    call_command("schedule", "list")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("nightly-swap\t") and "spark-control" in line and f"last {RunOutcome.RUNNING}" in line
    with pytest.raises(CommandError, match="no scheduled action named 'nope'"):
        call_command("schedule", "run", "nope")
