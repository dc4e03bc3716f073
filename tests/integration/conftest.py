"""Integration fixtures: a real simulated Spark cluster (OpenSSH sshd per node) shared by the session."""

from __future__ import annotations

import pytest

from sparkcontrol.demo import sim_register


@pytest.fixture(scope="session")
def sim(tmp_path_factory):  # type: ignore[no-untyped-def]
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("sim"), nodes=2, load_seconds=0.5) as cluster:
        yield cluster


@pytest.fixture
def topology(sim, settings, db):  # type: ignore[no-untyped-def]
    """The simulated cluster registered as the topology, clean of containers and failure modes."""
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "LOCAL_MODEL_ROOTS": [f"{sim.root}/models"], "HF_TOKEN": ""}
    sim.stop_containers()
    sim.set_fail_mode(None)
    sim.set_load_seconds(0.5)
    sim_register(sim=sim)
    yield sim
    sim.stop_containers()
