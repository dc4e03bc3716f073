"""The swap API's contract: codes, bodies, auth, the lock gate, history and status (no nodes are touched:
in these tests the runner task is never started because the request transaction is never committed)."""

import uuid

import pytest

from audit.models import AuditEntry
from coordination.services import lock_acquire
from swaps.models import Swap, SwapState
from swaps.services import swap_finish

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny(model_factory):
    return model_factory("tiny", repo="sim/tiny-model")


def test_auth_and_scopes(anon, reader, tiny):
    assert anon.post("/api/swap", {"model": "tiny"}).status_code == 401
    assert reader.post("/api/swap", {"model": "tiny"}).status_code == 403
    assert Swap.objects.count() == 0


def test_accepted_swap_is_202_and_queued(operator, tiny):
    response = operator.post("/api/swap", {"model": "tiny"})
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["state"] == "queued" and body["model"] == "tiny" and body["dry_run"] is False
    assert body["requested_by"].startswith("token:")
    swap = Swap.objects.get(pk=body["id"])
    assert swap.active is True
    events = operator.get(f"/api/swap/{swap.id}/events").json()
    assert [(e["seq"], e["kind"], e["state"]) for e in events] == [(1, "state", "queued")]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model": "nope"}, 404, "no catalog entry"),
        ({}, 422, "model"),
        ({"model": "tiny", "surprise": True}, 422, "surprise"),
        ({"model": "tiny", "dry_run": "perhaps"}, 422, "dry_run"),
    ],
)
def test_bad_requests(operator, tiny, body, status, words):
    response = operator.post("/api/swap", body)
    assert response.status_code == status, response.content
    assert words in response.json()["detail"]


def test_disabled_model_is_422(operator, model_factory):
    model_factory("off", repo="sim/tiny-model", enabled=False)
    response = operator.post("/api/swap", {"model": "off"})
    assert response.status_code == 422 and "disabled" in response.json()["detail"]


def test_second_swap_is_409_with_the_active_one(operator, tiny):
    first = operator.post("/api/swap", {"model": "tiny"}).json()
    response = operator.post("/api/swap", {"model": "tiny"})
    assert response.status_code == 409
    assert response.json()["active_swap"] == first["id"]
    dry = operator.post("/api/swap", {"model": "tiny", "dry_run": True})
    assert dry.status_code == 202, "a dry run changes nothing and does not need the slot"


def test_lock_gate(operator, admin_api, tiny):
    grant, _ = lock_acquire(holder="nightly-cron", ttl_seconds=600, token=None, actor="test")
    refused = operator.post("/api/swap", {"model": "tiny"})
    assert refused.status_code == 423
    assert refused.json()["holder"] == "nightly-cron" and refused.json()["expires_at"]
    wrong = operator.post("/api/swap", {"model": "tiny"}, headers={"X-Swap-Lock-Token": "not-it"})
    assert wrong.status_code == 423
    assert operator.post("/api/swap", {"model": "tiny", "dry_run": True}).status_code == 202
    assert operator.post("/api/swap?force=true", {"model": "tiny"}).status_code == 403
    accepted = operator.post("/api/swap", {"model": "tiny"}, headers={"X-Swap-Lock-Token": grant.token})
    assert accepted.status_code == 202
    assert accepted.json()["lock_epoch"] == grant.epoch
    Swap.objects.filter(active=True).update(active=None, state=SwapState.CANCELLED)
    forced = admin_api.post("/api/swap?force=true", {"model": "tiny"})
    assert forced.status_code == 202 and forced.json()["forced"] is True
    assert AuditEntry.objects.filter(action="swap.request", detail__forced=True).exists()


def test_get_swap_and_unknown_ids(reader, operator, tiny):
    swap_id = operator.post("/api/swap", {"model": "tiny"}).json()["id"]
    assert reader.get(f"/api/swap/{swap_id}").json()["id"] == swap_id
    missing = reader.get(f"/api/swap/{uuid.uuid4()}")
    assert missing.status_code == 404 and "no swap" in missing.json()["detail"]
    malformed = reader.get("/api/swap/not-a-uuid")
    assert malformed.status_code == 404 and missing.headers["Content-Type"].startswith("application/json")
    assert malformed.headers["Content-Type"].startswith("application/json")


def test_cancel_queued_then_409(operator, tiny):
    swap_id = operator.post("/api/swap", {"model": "tiny"}).json()["id"]
    response = operator.post(f"/api/swap/{swap_id}/cancel")
    assert response.status_code == 202 and response.json()["state"] == "cancelled"
    again = operator.post(f"/api/swap/{swap_id}/cancel")
    assert again.status_code == 409
    events = operator.get(f"/api/swap/{swap_id}/events?after=1").json()
    assert events[-1]["state"] == "cancelled" and events[0]["seq"] == 2


def test_history_pages_newest_first(operator, reader, tiny):
    ids = []
    for _ in range(5):
        swap = Swap.objects.get(pk=operator.post("/api/swap", {"model": "tiny"}).json()["id"])
        swap_finish(swap=swap, state=SwapState.READY)
        ids.append(str(swap.id))
    page = reader.get("/api/swaps?limit=2").json()
    assert [s["id"] for s in page] == ids[::-1][:2]
    rest = reader.get(f"/api/swaps?limit=10&before={page[-1]['id']}").json()
    assert [s["id"] for s in rest] == ids[::-1][2:]
    assert reader.get("/api/swaps?before=yesterday").status_code == 422
    assert reader.get("/api/swaps?limit=0").status_code == 422


def test_status_shows_serving_active_and_lock(reader, operator, tiny):
    status = reader.get("/api/status").json()
    assert status["serving"]["model"] is None and status["active_swap"] is None
    assert status["lock"]["locked"] is False
    swap = Swap.objects.get(pk=operator.post("/api/swap", {"model": "tiny"}).json()["id"])
    assert reader.get("/api/status").json()["active_swap"]["id"] == str(swap.id)
    swap_finish(swap=swap, state=SwapState.READY)
    status = reader.get("/api/status").json()
    assert status["serving"]["model"] == "tiny" and status["serving"]["swap_id"] == str(swap.id)
    assert status["active_swap"] is None
