"""The swap suite's common path against every launcher generation Spark Control supports (sparksim's imitation of
each; `SPARKSIM_LAUNCHER_VERSION`): one node, two nodes, one node again, with the backend each generation needs.
Generations that break the swap are refused at pre-flight (`test_real_sparks.py`)."""

from __future__ import annotations

import time

import pytest

from swaps.models import Swap, SwapState
from swaps.runner import swap_run
from swaps.services import swap_request

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# generation -> (launcher flags a two-node launch carries, vLLM flags it adds, the backend recorded)
SUPPORTED = {
    "2026-03-04": ([], ["--distributed-executor-backend", "ray"], "Ray"),
    "2026-03-13": (["--no-ray"], [], "--no-ray"),
    "2026-03-25": (["--no-ray"], [], "--no-ray"),
    "2026-08-10": ([], [], "its default"),
}


def _run(model_key: str) -> Swap:
    swap = swap_request(model_key=model_key, dry_run=False, actor="test")
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    return swap


@pytest.mark.parametrize("generation", list(SUPPORTED))
def test_one_node_two_nodes_one_node(topology, model_factory, generation):
    flags, vllm_flags, backend = SUPPORTED[generation]
    topology.set_launcher_version(generation)
    try:
        model_factory("tiny", repo="sim/tiny-model")
        model_factory("pair", repo="sim/big-model", nodes=2)
        started = time.time()
        for key in ("tiny", "pair", "tiny"):
            swap = _run(key)
            assert swap.state == SwapState.READY, f"{key}: {swap.error}"
            if key == "pair":
                pair = swap
        launches = [
            r["argv"]
            for r in topology.records(prog="launch-cluster.sh", event="start", since=started)
            if "exec" in r["argv"]
        ]
        two_node = next(argv for argv in launches if "-n" in argv)
        options = two_node[: two_node.index("exec")]
        assert ("--no-ray" in options) == ("--no-ray" in flags), options
        assert (
            two_node[-len(vllm_flags) :] == vllm_flags
            if vllm_flags
            else "--distributed-executor-backend" not in two_node
        )
        assert backend in pair.launcher["backend"]
        assert topology.containers(topology.workers[0].name) == [], "the worker's rank outlived the two-node model"
    finally:
        topology.set_launcher_version(None)
