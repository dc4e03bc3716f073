"""One scaled-out deployment for the session: two daphne web processes, a uvicorn one, two db_workers, sparksim."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scaleout.deployment import Deployment


@pytest.fixture(scope="session")
def scaleout_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("scaleout-sim"), nodes=1, load_seconds=0.5, launcher_dir="") as sim:
        yield sim


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory, scaleout_sim) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    found = Deployment(tmp=tmp_path_factory.mktemp("scaleout"), sim=scaleout_sim).create()
    try:
        found.manage(
            "shell",
            "-c",
            "from catalog.models import ModelEntry\n"
            "for key in ('alpha', 'beta', 'gamma'):\n"
            "    ModelEntry.objects.create(key=key, name=key, repo='sim/tiny-model')",
        )
        # Both daphne processes start at once, as a service manager would start them.
        web1, web2 = found.start_web("web1"), found.start_web("web2")
        web3 = found.start_uvicorn("web3")
        worker1, worker2 = found.start_worker("worker1"), found.start_worker("worker2")
        found.wait_ready(web1, web2, web3, worker1, worker2)
        yield found
    finally:
        found.close()


@pytest.fixture
def sim(deployment: Deployment):  # type: ignore[no-untyped-def]
    """The cluster clean of containers and failure modes, with a short load time."""
    deployment.sim.stop_containers()
    deployment.sim.set_fail_mode(None)
    deployment.sim.set_load_seconds(0.5)
    yield deployment.sim
    deployment.sim.set_load_seconds(0.5)
