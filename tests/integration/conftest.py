"""Integration fixtures: a real simulated Spark cluster (OpenSSH sshd per node) shared by the session."""

from __future__ import annotations

import pytest

from sparkcontrol.demo import sim_register


@pytest.fixture(scope="session")
def sim(tmp_path_factory):  # type: ignore[no-untyped-def]
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("sim"), nodes=2, load_seconds=0.5, launcher_dir="") as cluster:
        _quick_memory(cluster)
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


@pytest.fixture(scope="session")
def single_spark(tmp_path_factory):  # type: ignore[no-untyped-def]
    """One Spark on its own: no worker, no CX7 cable (ibdev2netdev shows no link up), no launcher .env."""
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("single"), nodes=1, load_seconds=0.3, launcher_dir="") as cluster:
        _quick_memory(cluster)
        yield cluster


@pytest.fixture
def single_topology(single_spark, settings, db):  # type: ignore[no-untyped-def]
    settings.SPARKCONTROL = {
        **settings.SPARKCONTROL,
        "LOCAL_MODEL_ROOTS": [f"{single_spark.root}/models"],
        "HF_TOKEN": "",
    }
    single_spark.stop_containers()
    single_spark.set_fail_mode(None)
    sim_register(sim=single_spark)
    yield single_spark
    single_spark.stop_containers()


def _quick_memory(cluster) -> None:  # type: ignore[no-untyped-def]
    """A stopped model's memory comes back over 0.3 s instead of the simulator's 1.5 s (the swap still waits for it
    to settle; the tests just wait less)."""
    for node in cluster.nodes:
        cluster.set_node_env(node.name, "SPARKSIM_MEM_RELEASE_SECONDS", "0.3")
