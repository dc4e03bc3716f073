"""The runner's writes to its swap: each is a compare-and-set on the row (a swap that ended elsewhere is never
written again), and a state change or a step's record carries its events in the same transaction."""

from __future__ import annotations

import pytest

from swaps.models import Swap, SwapEvent, SwapState
from swaps.services import SwapCancelled, SwapSuperseded, swap_events_append, swap_record, swap_transition

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(model_factory) -> Swap:
    entry = model_factory("tiny", repo="sim/tiny-model")
    swap = Swap.objects.create(model_key="tiny", model=entry, requested_by="t", active=True)
    swap_events_append(swap=swap, items=[("state", "queued")])
    return swap


def _events(swap: Swap) -> list[tuple[int, str, str]]:
    return list(SwapEvent.objects.filter(swap=swap).order_by("seq").values_list("seq", "state", "message"))


def test_a_transition_writes_the_state_and_its_event_after_the_last_one(running):
    swap_transition(swap=running, state=SwapState.PREFLIGHT, message="preflight: checking")
    swap_transition(swap=running, state=SwapState.STOPPING)
    row = Swap.objects.get(pk=running.pk)
    assert row.state == SwapState.STOPPING and row.heartbeat_at is not None
    assert _events(running) == [
        (1, SwapState.QUEUED, "queued"),
        (2, SwapState.PREFLIGHT, "preflight: checking"),
        (3, SwapState.STOPPING, SwapState.STOPPING),
    ]


@pytest.mark.parametrize("ended", [SwapState.INTERRUPTED, SwapState.CANCELLED])
def test_a_swap_that_ended_elsewhere_is_neither_moved_nor_recorded(running, ended):
    Swap.objects.filter(pk=running.pk).update(state=ended, active=None)
    running.checks = [{"name": "launcher", "ok": True, "detail": "stale"}]
    with pytest.raises(SwapSuperseded, match=f"already {ended}"):
        swap_transition(swap=running, state=SwapState.STOPPING)
    with pytest.raises(SwapSuperseded, match=f"already {ended}"):
        swap_record(swap=running, fields=["checks"], items=[("check", "launcher: stale")])
    row = Swap.objects.get(pk=running.pk)
    assert row.state == ended and row.checks == []
    assert _events(running) == [(1, SwapState.QUEUED, "queued")]


def test_a_deleted_swap_stops_its_runner(running):
    Swap.objects.filter(pk=running.pk).delete()
    with pytest.raises(SwapSuperseded, match="deleted"):
        swap_transition(swap=running, state=SwapState.PREFLIGHT)


def test_a_record_saves_the_fields_and_appends_the_events_together(running):
    swap_transition(swap=running, state=SwapState.PREFLIGHT)
    running.checks = [{"name": "launcher", "ok": True, "detail": "found"}]
    running.commands = ["launch-cluster.sh --help"]
    swap_record(swap=running, fields=["checks", "commands"], items=[("check", "ok launcher"), ("check", "ok memory")])
    row = Swap.objects.get(pk=running.pk)
    assert row.checks == running.checks and row.commands == running.commands
    assert [message for _, _, message in _events(running)][-2:] == ["ok launcher", "ok memory"]
    assert [seq for seq, _, _ in _events(running)] == [1, 2, 3, 4]


def test_a_transition_saves_what_the_step_found_and_its_events_before_the_state(running):
    swap_transition(swap=running, state=SwapState.PREFLIGHT)
    checks = [{"name": "launcher", "ok": True, "detail": "found"}]
    swap_transition(
        swap=running,
        state=SwapState.STOPPING,
        message="stopping: now",
        items=[("check", "ok launcher"), ("check", "ok memory")],
        checks=checks,
        commands=["stop", "launch"],
    )
    row = Swap.objects.get(pk=running.pk)
    assert row.state == SwapState.STOPPING and row.checks == checks and row.commands == ["stop", "launch"]
    assert _events(running)[1:] == [
        (2, SwapState.PREFLIGHT, SwapState.PREFLIGHT),
        (3, SwapState.PREFLIGHT, "ok launcher"),
        (4, SwapState.PREFLIGHT, "ok memory"),
        (5, SwapState.STOPPING, "stopping: now"),
    ]


def test_a_transition_that_heeds_a_cancel_writes_nothing(running):
    swap_transition(swap=running, state=SwapState.PREFLIGHT)
    Swap.objects.filter(pk=running.pk).update(cancel_requested=True)
    with pytest.raises(SwapCancelled):
        swap_transition(
            swap=running, state=SwapState.STOPPING, items=[("check", "ok launcher")], heed_cancel=True, checks=[{}]
        )
    row = Swap.objects.get(pk=running.pk)
    assert row.state == SwapState.PREFLIGHT and row.checks == []
    assert len(_events(running)) == 2
    # Without heed_cancel (the runner's own last steps) the same request does not stop the write.
    swap_transition(swap=running, state=SwapState.STOPPING)
    assert Swap.objects.get(pk=running.pk).state == SwapState.STOPPING
