"""Gateway fixtures: one simulated cluster, fake embeddings/speech services, one deployment and its servers.

The servers share the deployment's SQLite database (as web processes of one scaled-out install would): `main`
runs the task worker (swaps run there); the others are gateway-only processes with their own settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from testkit.api import client, swap_to
from testkit.gateway import Deployment
from testkit.service import Process

MODELS = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="session")
def sim(tmp_path_factory):  # type: ignore[no-untyped-def]
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("gateway-sim"), nodes=2, load_seconds=0.5, launcher_dir="") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def farm():  # type: ignore[no-untyped-def]
    from sparksim.fake_services import FakeServiceFarm

    with FakeServiceFarm() as services:
        yield services


@pytest.fixture(scope="session")
def fakes(farm) -> dict:  # type: ignore[no-untyped-def]
    return {"embeddings": farm.add("embeddings"), "stt": farm.add("stt"), "tts": farm.add("tts")}


@pytest.fixture(scope="session")
def deployment(sim, fakes, tmp_path_factory) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    services = {
        "embeddings": (fakes["embeddings"], ["sim/embed"]),
        "parakeet-asr": (fakes["stt"], ["sim/parakeet"]),
        "kokoro-tts": (fakes["tts"], ["sim/kokoro"]),
    }
    deployment = Deployment(tmp_path_factory.mktemp("gateway-data"), sim=sim, farm_services=services, models=MODELS)
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.fixture(scope="session")
def main(deployment) -> Process:  # type: ignore[no-untyped-def]
    """The serving process with the task worker: swaps run here."""
    return deployment.serve(SPARKCONTROL_GATEWAY_DRAIN_SECONDS="20", SPARKCONTROL_GATEWAY_HOLD_SECONDS="60")


@pytest.fixture(scope="session")
def strict(deployment, main) -> Process:  # type: ignore[no-untyped-def]
    """A gateway-only process with small body limits and a short, small cap queue."""
    return deployment.serve(
        worker=False,
        SPARKCONTROL_GATEWAY_MAX_JSON_BYTES="2048",
        SPARKCONTROL_GATEWAY_MAX_AUDIO_BYTES="4096",
        SPARKCONTROL_GATEWAY_QUEUE_SIZE="1",
        SPARKCONTROL_GATEWAY_QUEUE_SECONDS="0.6",
        SPARKCONTROL_GATEWAY_RETRY_AFTER="3",
        SPARKCONTROL_GATEWAY_HOLD_SECONDS="0.5",
    )


@pytest.fixture(scope="session")
def open_gateway(deployment, main) -> Process:  # type: ignore[no-untyped-def]
    """A gateway-only process in open mode (no credentials)."""
    return deployment.serve(worker=False, SPARKCONTROL_GATEWAY_OPEN="1")


@pytest.fixture(scope="session")
def on_demand(deployment, main) -> Process:  # type: ignore[no-untyped-def]
    """A gateway-only process with on-demand swaps on (the swap itself runs in `main`'s worker)."""
    return deployment.serve(worker=False, SPARKCONTROL_GATEWAY_ON_DEMAND="1", SPARKCONTROL_GATEWAY_HOLD_SECONDS="60")


@pytest.fixture
def api(deployment, main) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with client(main, deployment.tokens["admin"]) as api_client:
        yield api_client


def serving(api: httpx.Client, model: str) -> None:
    """Make `model` the served one (a swap only when it is not)."""
    status = api.get("/api/status").json()
    served = (status.get("serving") or {}).get("model")
    if served != model or status.get("active_swap"):
        swap = swap_to(api, model)
        assert swap["state"] == "ready", swap.get("error") or swap


@pytest.fixture
def alpha(sim, api) -> None:  # type: ignore[no-untyped-def]
    """`alpha` served, nothing else going on."""
    sim.set_load_seconds(0.5)
    serving(api, "alpha")
    time.sleep(0.1)


def wait_until(predicate, timeout: float = 10.0, step: float = 0.02):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")
