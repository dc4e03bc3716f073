"""Routing decisions (a pure function of the snapshots) and the drain wait against the ledger."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from gateway.routing import ServiceRoute, SwapsSnapshot, SwapView, Topology, route_decide
from swaps.drain import DrainReport, drain_requested, drain_wait
from swaps.models import GatewayLedger, Swap, SwapState

HEAD = ServiceRoute(key="vllm", kind="vllm", base_url="http://h:1", cap=0, models=(), status="up", head=True)
TTS = ServiceRoute(key="tts", kind="tts", base_url="http://t:1", cap=2, models=("kokoro",), status="up", head=False)
TOPOLOGY = Topology(
    services={"vllm": HEAD, "tts": TTS}, routes={"kokoro": "tts"}, catalog={"alpha": "alpha", "beta-served": "beta"}
)


def _decide(model: str, *, state: str | None = None, draining: dict | None = None, on_demand: bool = False):  # type: ignore[no-untyped-def]
    active = SwapView(id="s1", model_key="beta", served_name="beta-served", state=state) if state else None
    swaps = SwapsSnapshot(serving_key="alpha", serving_name="alpha", active=active, latest=active)
    return route_decide(
        model=model,
        default_kind="tts",
        topology=TOPOLOGY,
        swaps=swaps,
        draining=draining or {},
        on_demand=on_demand,
        retry_after=7,
    )


def test_the_served_model_goes_to_the_head_and_is_counted_under_its_key():
    decision = _decide("alpha")
    assert decision.action == "serve" and decision.service == HEAD and decision.head_key == "alpha"
    assert _decide("kokoro").service == TTS and _decide("kokoro").head_key is None
    assert _decide("").service == TTS, "no model: the only service of the route's kind"


@pytest.mark.parametrize("state", [SwapState.QUEUED, SwapState.PREFLIGHT])
def test_before_stopping_the_outgoing_model_is_served_and_the_incoming_held(state):
    assert _decide("alpha", state=state).action == "serve"
    held = _decide("beta-served", state=state)
    assert held.action == "hold" and held.swap_id == "s1"


@pytest.mark.parametrize("state", [SwapState.STOPPING, SwapState.LAUNCHING, SwapState.LOADING])
def test_from_stopping_on_the_outgoing_model_is_refused_with_retry_after(state):
    refused = _decide("alpha", state=state)
    assert refused.action == "refuse" and refused.status == 503 and refused.retry_after == 7
    assert _decide("beta-served", state=state).action == "hold"
    assert _decide("kokoro", state=state).action == "serve", "other services are not touched by a swap"


def test_a_drain_request_refuses_before_the_snapshot_shows_the_swap():
    refused = _decide("alpha", draining={"s9": "beta"})
    assert refused.status == 503
    held = _decide("beta-served", draining={"s9": "beta"})
    assert held.action == "hold" and held.swap_id == "s9"


def test_not_loaded_catalog_models_and_unknown_names():
    off = _decide("beta-served")
    assert off.status == 404 and off.code == "model_not_loaded"
    assert _decide("beta-served", on_demand=True).action == "swap"
    assert _decide("beta-served", on_demand=True).model_key == "beta"
    unknown = _decide("nope")
    assert unknown.status == 404 and unknown.extra["models"] == ["alpha", "kokoro"]


def test_a_model_whose_last_swap_failed_says_so_and_is_not_swapped_again_on_demand():
    failed = SwapView(id="s0", model_key="beta", served_name="beta-served", state=SwapState.FAILED, error="OOM\nmore")
    swaps = SwapsSnapshot(serving_key="alpha", serving_name="alpha", active=None, latest=failed)
    for on_demand in (False, True):
        decision = route_decide(
            model="beta-served",
            default_kind=None,
            topology=TOPOLOGY,
            swaps=swaps,
            draining={},
            on_demand=on_demand,
            retry_after=7,
        )
        assert (decision.status, decision.code) == (503, "swap_failed")
        assert decision.message == "the swap to 'beta' ended failed: OOM"


# --- the drain --------------------------------------------------------------------------------------------------
@pytest.fixture
def local_counts():  # type: ignore[no-untyped-def]
    """A stand-in gateway in this process answering the drain signal with `counts`."""
    counts: dict[str, int] = {}
    seen: list[str | None] = []

    def receiver(sender, *, swap_id, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(swap_id)
        return DrainReport(process="local-test", in_flight=dict(counts), seen_swap=swap_id)

    drain_requested.connect(receiver, sender=Swap, dispatch_uid="test-local-counts")
    yield counts, seen
    drain_requested.disconnect(dispatch_uid="test-local-counts", sender=Swap)


def _row(process: str, counts: dict, *, seen: object = None, age_s: float = 0.0) -> None:
    GatewayLedger.objects.create(
        process=process, in_flight=counts, seen_swap=seen, beat_at=timezone.now() - timedelta(seconds=age_s)
    )


@pytest.mark.django_db
def test_nothing_in_flight_is_no_wait(local_counts):
    started = time.monotonic()
    assert drain_wait(model_key=None, timeout_s=5, skip=False) == 0
    assert time.monotonic() - started < 0.2


@pytest.mark.django_db
def test_a_local_request_is_waited_for_until_it_ends(local_counts):
    counts, _ = local_counts
    counts["alpha"] = 1
    threading.Timer(0.3, counts.clear).start()
    started = time.monotonic()
    assert drain_wait(model_key=None, timeout_s=5, skip=False) == 0
    assert 0.25 <= time.monotonic() - started < 2


@pytest.mark.django_db
def test_another_process_counts_until_the_timeout_and_skip_does_not_wait(local_counts):
    _row("web-2", {"alpha": 2, "other": 1})
    started = time.monotonic()
    assert drain_wait(model_key="alpha", timeout_s=0.3, skip=False) == 2
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert drain_wait(model_key=None, timeout_s=5, skip=True) == 3
    assert time.monotonic() - started < 0.2


@pytest.mark.django_db
def test_a_dead_process_does_not_block(local_counts):
    _row("web-dead", {"alpha": 5}, age_s=60)
    assert drain_wait(model_key=None, timeout_s=5, skip=False) == 0


@pytest.mark.django_db
def test_a_process_must_acknowledge_the_stopping_swap(local_counts):
    _, seen = local_counts
    swap = Swap.objects.create(model_key="beta", requested_by="t", state=SwapState.STOPPING, active=True)
    _row("web-2", {})
    assert drain_wait(model_key=None, timeout_s=0.3, skip=False) == 0, "nothing counted, but it did wait"
    assert seen and seen[0] == str(swap.id), "the local gateway was told which swap is stopping"
    messages = list(swap.events.values_list("message", flat=True))
    assert any("1 gateway process(es) to acknowledge" in message for message in messages), messages
    GatewayLedger.objects.filter(process="web-2").update(seen_swap=swap.id)
    started = time.monotonic()
    assert drain_wait(model_key=None, timeout_s=5, skip=False) == 0
    assert time.monotonic() - started < 0.2
