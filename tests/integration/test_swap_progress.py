"""A swap's progress bar end to end: sparksim's vLLM prints vLLM's start-up lines through the real sshd and docker
log, the runner turns them into phases, fractions and (from the model's previous loads) an ETA."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from swaps.models import Swap, SwapState
from swaps.progress import FIRST_LOAD, LABELS, MESSAGE_PREFIX, PHASES
from swaps.runner import swap_run
from swaps.services import swap_request

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _swap_watched(model_key: str, reader) -> tuple[Swap, list[dict], list[dict]]:  # type: ignore[no-untyped-def]
    """Run a swap in a thread; every distinct progress the API showed meanwhile (GET /api/swap/{id}), and what
    /api/status said of the active swap."""
    swap = swap_request(model_key=model_key, dry_run=False, actor="test")

    def run() -> None:
        try:
            swap_run(swap_id=str(swap.id))
        finally:
            connections.close_all()  # this thread's own connection: the test database is dropped at the end

    runner = threading.Thread(target=run)
    runner.start()
    seen: list[dict] = []
    statuses: list[dict] = []
    deadline = time.monotonic() + 60
    while runner.is_alive():
        assert time.monotonic() < deadline, "the swap never ended"
        body = reader.get(f"/api/swap/{swap.id}").json()
        if body["progress"] is not None and (not seen or seen[-1] != body["progress"]):
            seen.append(body["progress"])
        active = reader.get("/api/status").json()["active_swap"]
        if active is not None and active["progress"] is not None:
            statuses.append(active["progress"])
        time.sleep(0.02)
    runner.join()
    # The last write (the ready state with its final progress) may land after the last poll above.
    body = reader.get(f"/api/swap/{swap.id}").json()
    if body["progress"] is not None and (not seen or seen[-1] != body["progress"]):
        seen.append(body["progress"])
    swap.refresh_from_db()
    return swap, seen, statuses


def _progress_events(reader, swap: Swap) -> list[dict]:  # type: ignore[no-untyped-def]
    response = reader.get(f"/api/swap/{swap.id}/events")
    assert response.status_code == 200
    return [e for e in response.json() if e["kind"] == "progress" and e["message"].startswith(MESSAGE_PREFIX)]


def _went_through_the_phases(order: list[str]) -> bool:
    """In PHASES' order, from the first to the last, with the weights between. A phase shorter than the log's
    delivery (the simulated CUDA-graph capture takes ~0.1 s) may be passed before the follower reads it, when the
    engine is already serving."""
    return (
        order == [phase for phase in PHASES if phase in order]
        and order[0] == PHASES[0]
        and order[-1] == PHASES[-1]
        and "weights" in order
    )


def _phases_in(events: list[dict], swap: Swap) -> list[str]:
    """The phases the progress went through, in order: its events (each names its phase's label first), then the
    progress the swap ended with."""
    order: list[str] = []
    labels = [event["message"].removeprefix(MESSAGE_PREFIX) for event in events] + [swap.progress["label"]]
    for text in labels:
        phase = next(phase for phase in PHASES if text.startswith(LABELS[phase]))
        if not order or order[-1] != phase:
            order.append(phase)
    return order


def test_progress_goes_through_every_phase_and_the_second_load_has_an_eta(topology, model_factory, reader):
    topology.set_load_seconds(1.5)
    model_factory("tiny", repo="sim/tiny-model")

    first, seen, statuses = _swap_watched("tiny", reader)
    assert first.state == SwapState.READY, first.error
    assert first.progress["phase"] == "api_server" and first.progress["fraction"] == 1.0
    assert first.progress["eta_seconds"] == 0.0
    events = _progress_events(reader, first)
    phases = _phases_in(events, first)
    assert _went_through_the_phases(phases), phases
    assert all(event["state"] == "loading" for event in events)
    # A first load never guesses: no ETA until the end, and it says why.
    assert all(progress["eta_seconds"] is None for progress in seen if progress["fraction"] < 1)
    assert all(FIRST_LOAD in event["message"] for event in events)
    assert seen[0]["phase"] == "starting" and seen[0]["note"] == FIRST_LOAD
    fractions = [progress["fraction"] for progress in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert statuses, "GET /api/status never showed the active swap's progress"
    # What the next load's estimate comes from: how long each phase took.
    assert set(first.phase_durations) == set(PHASES)
    assert first.phase_durations["weights"] > 0 and first.phase_durations["cuda_graphs"] > 0

    second, seen, _ = _swap_watched("tiny", reader)
    assert second.state == SwapState.READY, second.error
    loading = [progress for progress in seen if progress["fraction"] < 1]
    assert loading and all(progress["eta_seconds"] is not None for progress in loading)
    assert loading[0]["note"] == "estimated from the last 1 load of this model" and loading[0]["loads"] == 1
    assert loading[0]["eta_seconds"] > 0
    phases = _phases_in(_progress_events(reader, second), second)
    assert _went_through_the_phases(phases), phases
    assert second.progress["fraction"] == 1.0


def test_a_failed_load_keeps_where_it_stopped_and_is_no_history(topology, model_factory, reader):
    model_factory("oom", repo="sim/oom")
    swap = swap_request(model_key="oom", dry_run=False, actor="test")
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    assert swap.state == SwapState.FAILED
    assert swap.progress is not None and swap.progress["phase"] in ("starting", "weights")
    assert swap.progress["fraction"] < 1
    assert swap.phase_durations is None
