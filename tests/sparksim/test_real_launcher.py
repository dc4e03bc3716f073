"""The real spark-vllm-docker launcher, run inside the simulation over SSH.

Set ``SPARKSIM_LAUNCHER_DIR`` to a checkout of spark-vllm-docker (any generation from 2026-02-26 on)::

    SPARKSIM_LAUNCHER_DIR=/path/to/spark-vllm-docker \\
        python -m pytest tests/sparksim/test_real_launcher.py -p no:django --confcutdir=tests/sparksim

Without it every test here is skipped (there is no real launcher to run).
"""

from __future__ import annotations

import os
import re

import pytest

from sparksim import SimCluster
from sparksim.cluster import free_port

from .conftest import LOAD_SECONDS, Shell, served_models, wait_for

LAUNCHER_DIR = os.environ.get("SPARKSIM_LAUNCHER_DIR")

pytestmark = pytest.mark.skipif(
    not LAUNCHER_DIR,
    reason="SPARKSIM_LAUNCHER_DIR is not set: it names the spark-vllm-docker checkout these tests run",
)

LAUNCHER = "~/spark-vllm-docker/launch-cluster.sh"


def _script() -> str:
    with open(os.path.join(LAUNCHER_DIR, "launch-cluster.sh"), encoding="utf-8") as fh:
        return fh.read()


def multi_node_backend_options() -> str:
    """Launcher options for a plain `vllm serve -tp 2` on two nodes in this generation.

    Generations whose multi-node default is Ray (``NO_RAY_MODE="false"``, 2026-03-13 to about 2026-04)
    add no backend flag, so vLLM would need ``--distributed-executor-backend ray``; ``--no-ray`` makes them
    pass the launcher's own rank flags, as the newest generations do by default.
    """
    return "--no-ray" if re.search(r'^NO_RAY_MODE="false"', _script(), re.M) else ""


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparksim-real")
    with SimCluster(root=root, nodes=2, load_seconds=LOAD_SECONDS, sshd_wait=60, launcher_dir=LAUNCHER_DIR) as sim:
        shell = Shell(sim)
        yield sim, shell
        shell.close()


@pytest.fixture(autouse=True)
def clean(request):
    if not LAUNCHER_DIR or "real" not in request.fixturenames:
        yield
        return
    sim, _ = request.getfixturevalue("real")
    sim.stop_containers()
    yield
    sim.stop_containers()


def nodes_arg(sim: SimCluster) -> str:
    return ",".join(node.ip for node in sim.nodes)


def test_the_checkout_is_installed_on_every_node(real):
    sim, shell = real
    assert sim.as_json()["launcher"] == "real"
    assert sim.as_json()["launcher_dir"] == os.path.abspath(LAUNCHER_DIR)
    for node in sim.nodes:
        with open(node.launcher_path, encoding="utf-8") as fh:
            assert fh.read() == _script()
        assert not os.path.exists(os.path.join(node.dir, "spark-vllm-docker", ".git"))


def test_check_config_prints_the_container_name(real):
    sim, shell = real
    rc, out, err = shell.run(f"{LAUNCHER} -n {nodes_arg(sim)} --check-config")
    assert rc == 0, out + err
    assert "Container Name: vllm_node" in out
    assert f"SSH to {sim.workers[0].ip}: OK" in out
    assert "Worker Nodes: " + sim.workers[0].ip in out


def test_solo_exec_serves_then_stop(real):
    sim, shell = real
    port = free_port()
    rc, out, err = shell.run(
        f"{LAUNCHER} --solo -d exec vllm serve sim/tiny-model --port {port} --served-model-name x", timeout=60
    )
    assert rc == 0, out + err
    assert "Command dispatched in background (Daemon mode). Container: vllm_node" in out
    assert wait_for(lambda: served_models(port) == ["x"], timeout=30)
    assert sim.containers(sim.head.name) == ["vllm_node"]
    assert sim.containers(sim.workers[0].name) == []
    rc, out, _ = shell.run(f"{LAUNCHER} --solo stop")
    assert rc == 0
    assert "Cluster stopped." in out
    assert sim.containers(sim.head.name) == []


def test_two_node_exec_serves_status_then_stop_leaves_no_container(real):
    sim, shell = real
    port = free_port()
    nodes = nodes_arg(sim)
    options = multi_node_backend_options()
    ray_only = "--no-ray)" not in _script()  # before 2026-03-13: Ray is the only multi-node mode
    backend = " --distributed-executor-backend ray" if ray_only else ""
    rc, out, err = shell.run(
        f"{LAUNCHER} -n {nodes} {options} -d exec vllm serve sim/big-model -tp 2 --port {port} "
        f"--served-model-name big{backend}",
        timeout=120,
    )
    assert rc == 0, out + err
    assert wait_for(lambda: served_models(port) == ["big"], timeout=30)
    for node in sim.nodes:
        assert sim.containers(node.name) == ["vllm_node"]
    worker = sim.workers[0].name
    if ray_only:
        # The worker's container joined the head's Ray cluster; vLLM's second rank is a Ray worker there.
        assert os.path.exists(os.path.join(sim.node(worker).dir, "containers", "vllm_node", "ray-started"))
    else:
        # The worker rank runs in the worker's own container.
        assert f"Launching worker (rank 1) on {sim.workers[0].ip}" in out
        worker_runs = [r["argv"] for r in sim.records(prog="vllm", event="start") if r["node"] == worker]
        assert worker_runs and "--headless" in worker_runs[-1] and "--node-rank" in worker_runs[-1]

    rc, out, _ = shell.run(f"{LAUNCHER} -n {nodes} {options} status")
    assert rc == 0
    assert f"[HEAD] {sim.head.ip}: Container 'vllm_node' is RUNNING." in out
    assert f"[WORKER] {sim.workers[0].ip}: Container 'vllm_node' is RUNNING." in out

    rc, out, _ = shell.run(f"{LAUNCHER} -n {nodes} {options} stop")
    assert rc == 0
    assert "Cluster stopped." in out
    for node in sim.nodes:
        assert sim.containers(node.name) == []
    assert served_models(port) == []
    rc, out, _ = shell.run(f"{LAUNCHER} -n {nodes} {options} status")
    assert f"[WORKER] {sim.workers[0].ip}: Container 'vllm_node' is NOT running." in out


def test_stop_without_node_selection_on_a_single_spark_without_cable_fails(tmp_path):
    with SimCluster(root=tmp_path, nodes=1, load_seconds=LOAD_SECONDS, sshd_wait=60, launcher_dir=LAUNCHER_DIR) as one:
        shell = Shell(one)
        try:
            rc, out, err = shell.run(f"{LAUNCHER} stop")
            assert rc == 1, out + err
            assert "Error: No active IB interfaces found." in out
            rc, out, err = shell.run(f"{LAUNCHER} --solo stop")
            assert rc == 0, out + err
        finally:
            shell.close()
