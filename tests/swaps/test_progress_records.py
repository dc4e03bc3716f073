"""Where a swap's progress is kept: on the row while it loads (with its event), written once more by its finish, and
the history the next load's estimate comes from."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from swaps.models import Swap, SwapState
from swaps.selectors import swap_load_history
from swaps.services import swap_finish, swap_progress_record

pytestmark = pytest.mark.django_db

PROGRESS = {"phase": "weights", "label": "loading weights", "fraction": 0.3, "eta_seconds": None, "slow": None}


@pytest.fixture
def tiny(model_factory):
    return model_factory("tiny", repo="sim/tiny-model")


def test_a_new_swap_has_no_progress(operator, tiny):
    response = operator.post("/api/swap", {"model": "tiny"})
    assert response.status_code == 202
    assert response.json()["progress"] is None
    status = operator.get("/api/status").json()
    assert status["active_swap"]["progress"] is None


def test_progress_is_stored_shown_and_recorded_as_an_event(reader, tiny):
    swap = Swap.objects.create(model_key="tiny", model=tiny, requested_by="t", state=SwapState.LOADING, active=True)
    assert swap_progress_record(swap=swap, progress=PROGRESS, message="progress: loading weights 30%")
    body = reader.get(f"/api/swap/{swap.id}").json()
    assert body["progress"]["phase"] == "weights" and body["progress"]["fraction"] == 0.3
    assert body["progress"]["eta_seconds"] is None
    assert reader.get("/api/status").json()["active_swap"]["progress"]["phase"] == "weights"
    events = reader.get(f"/api/swap/{swap.id}/events").json()
    assert [(e["kind"], e["state"], e["message"]) for e in events] == [
        ("progress", "loading", "progress: loading weights 30%")
    ]

    swap_finish(swap=swap, state=SwapState.FAILED, error="boom")
    later = {**PROGRESS, "fraction": 0.9}
    assert not swap_progress_record(swap=swap, progress=later, message="progress: too late")
    swap.refresh_from_db()
    assert swap.progress["fraction"] == 0.3  # an ended swap keeps where it stopped
    assert len(reader.get(f"/api/swap/{swap.id}/events").json()) == 2  # the progress event and the failure


def test_the_finish_writes_the_last_progress_and_the_durations(tiny):
    swap = Swap.objects.create(model_key="tiny", model=tiny, requested_by="t", state=SwapState.LOADING, active=True)
    swap.progress = {**PROGRESS, "phase": "api_server", "fraction": 1.0, "eta_seconds": 0.0}
    swap.phase_durations = {"starting": 1.0, "weights": 2.0}
    swap_finish(swap=swap, state=SwapState.READY)
    fresh = Swap.objects.get(pk=swap.pk)
    assert fresh.state == SwapState.READY and fresh.progress["fraction"] == 1.0
    assert fresh.phase_durations == {"starting": 1.0, "weights": 2.0}


def test_the_history_is_the_models_last_successful_loads_newest_first(tiny, model_factory):
    other = model_factory("other", repo="sim/other-model")
    now = timezone.now()

    def done(entry, state, minutes, durations, dry_run=False):
        Swap.objects.create(
            model_key=entry.key,
            model=entry,
            requested_by="t",
            state=state,
            dry_run=dry_run,
            finished_at=now - timedelta(minutes=minutes),
            phase_durations=durations,
        )

    for age in range(7):
        done(tiny, SwapState.READY, age, {"weights": float(age)})
    done(tiny, SwapState.FAILED, 0.5, {"weights": 99.0})
    done(tiny, SwapState.READY, 0.2, None)  # ready before phases were recorded
    done(tiny, SwapState.READY, 0.1, {"weights": 98.0}, dry_run=True)
    done(other, SwapState.READY, 0, {"weights": 97.0})
    assert swap_load_history(model_key="tiny", limit=5) == [{"weights": float(age)} for age in range(5)]
    assert swap_load_history(model_key="nothing-yet") == []
