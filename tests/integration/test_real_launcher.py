"""Swaps through the real upstream `launch-cluster.sh`, installed in sparksim from a checkout named by
SPARKSIM_LAUNCHER_DIR. Skipped (never passed) when the variable is unset: the launcher is third-party code that this
repository does not carry. `docs/OPERATIONS.md` lists the versions these tests were run against."""

from __future__ import annotations

import os
import time

import pytest

from sparkcontrol.demo import sim_register
from swaps.models import Swap, SwapState
from swaps.runner import swap_run
from swaps.services import swap_request

LAUNCHER_DIR = os.environ.get("SPARKSIM_LAUNCHER_DIR", "")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not LAUNCHER_DIR, reason="set SPARKSIM_LAUNCHER_DIR to a spark-vllm-docker checkout"),
]


@pytest.fixture(scope="module")
def real_sim(tmp_path_factory):  # type: ignore[no-untyped-def]
    from sparksim import SimCluster

    with SimCluster(
        root=tmp_path_factory.mktemp("real"), nodes=2, load_seconds=0.5, launcher_dir=LAUNCHER_DIR
    ) as cluster:
        for node in cluster.nodes:
            cluster.set_node_env(node.name, "SPARKSIM_MEM_RELEASE_SECONDS", "0.3")
        yield cluster


@pytest.fixture
def real_topology(real_sim, settings, db):  # type: ignore[no-untyped-def]
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "LOCAL_MODEL_ROOTS": [f"{real_sim.root}/models"], "HF_TOKEN": ""}
    real_sim.stop_containers()
    real_sim.set_fail_mode(None)
    sim_register(sim=real_sim)
    yield real_sim
    real_sim.stop_containers()


def _run(model_key: str) -> Swap:
    swap = swap_request(model_key=model_key, dry_run=False, actor="test")
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    return swap


def test_the_real_launcher_swaps_one_node_then_two_then_one(real_topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    model_factory("pair", repo="sim/big-model", nodes=2)
    for key in ("tiny", "pair", "tiny"):
        swap = _run(key)
        assert swap.state == SwapState.READY, swap.error
    assert real_topology.containers(real_topology.workers[0].name) == [], "the two-node model's worker rank was left"
    assert swap.launcher["selection"] == "--solo"


def test_the_real_launcher_reports_an_unknown_vllm_flag_within_a_minute(real_topology, model_factory):
    model_factory("typo", repo="sim/tiny-model", vllm_args=["--max-num-seqz", "4"])
    started = time.monotonic()
    swap = _run("typo")
    assert swap.state == SwapState.FAILED
    assert "unrecognized arguments: --max-num-seqz" in swap.error.splitlines()[0], swap.error
    assert time.monotonic() - started < 60


def test_the_real_launcher_two_node_backend_is_recorded(real_topology, model_factory):
    model_factory("pair", repo="sim/big-model", nodes=2)
    swap = _run("pair")
    assert swap.state == SwapState.READY, swap.error
    assert swap.launcher["capabilities"]["daemon_exec"] and swap.launcher["capabilities"]["requotes_exec"]
    if swap.launcher["capabilities"]["no_ray"]:
        assert swap.launcher["backend"].startswith("no Ray")
    else:  # 2026-03-04: Ray is the launcher's only multi-node mode; the backend flag is ours
        assert swap.launcher["backend"].startswith("Ray")
        vllm = [r["argv"] for r in real_topology.records(prog="vllm", event="start")][-1]
        assert vllm[vllm.index("--distributed-executor-backend") + 1] == "ray"
