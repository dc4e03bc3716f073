"""What a real Spark needs from a swap, through sparksim imitating the real launcher and vLLM (failure modes first).

Each test here stands for a way the swap failed on real Sparks while it passed against an agreeable simulator.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cluster.services import cluster_settings_get
from sparksim.common import Node
from sparksim.meminfo import set_usage
from swaps.models import Swap, SwapState
from swaps.runner import swap_run
from swaps.services import swap_request

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _run(model_key: str, *, force: bool = False) -> Swap:
    swap = swap_request(model_key=model_key, dry_run=False, actor="test", force=force)
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    return swap


def _messages(swap: Swap) -> list[str]:
    return list(swap.events.order_by("seq").values_list("message", flat=True))


def _launcher_calls(sim, since: float) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return [r["argv"] for r in sim.records(prog="launch-cluster.sh", event="start", since=since)]


def _write_launcher_env(sim, text: str) -> None:  # type: ignore[no-untyped-def]
    Path(sim.head.dir, "spark-vllm-docker", ".env").write_text(text)


@pytest.fixture
def clean_launcher(topology):  # type: ignore[no-untyped-def]
    yield topology
    Path(topology.head.dir, "spark-vllm-docker", ".env").unlink(missing_ok=True)
    topology.set_launcher_version(None)


def test_a_single_spark_without_cable_swaps_with_solo_on_every_call(single_topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    started = time.time()
    first = _run("tiny")
    assert first.state == SwapState.READY, first.error
    second = _run("tiny")  # this one has a running container to stop
    assert second.state == SwapState.READY, second.error
    calls = _launcher_calls(single_topology, started)
    assert any("stop" in argv for argv in calls) and any("exec" in argv for argv in calls)
    for argv in calls:
        if "--help" not in argv:
            assert "--solo" in argv and "-n" not in argv, argv
    assert second.launcher["selection"] == "--solo"


@pytest.mark.parametrize(
    "generation, missing",
    [("2026-02-04", "daemon exec (2026-02-26)"), ("2026-02-26", "exec re-quoting with printf %q (2026-03-04)")],
)
def test_launchers_that_break_the_swap_are_refused_at_preflight(clean_launcher, model_factory, generation, missing):
    clean_launcher.set_launcher_version(generation)
    model_factory("tiny", repo="sim/tiny-model")
    started = time.time()
    swap = _run("tiny")
    assert swap.state == SwapState.FAILED and "pre-flight failed" in swap.error
    assert missing in swap.error
    assert not [argv for argv in _launcher_calls(clean_launcher, started) if {"exec", "stop"} & set(argv)]


def test_an_unknown_vllm_flag_fails_within_seconds_naming_it(topology, model_factory):
    model_factory("typo", repo="sim/tiny-model", vllm_args=["--max-num-seqz", "4"])
    started = time.monotonic()
    swap = _run("typo")
    took = time.monotonic() - started
    assert swap.state == SwapState.FAILED
    assert "unrecognized arguments: --max-num-seqz" in swap.error.splitlines()[0]
    assert took < 20, f"took {took:.1f} s"
    assert topology.containers(topology.head.name) == []


def test_a_failed_start_reports_the_root_cause_not_the_last_line(topology, model_factory):
    model_factory("oom", repo="sim/oom")
    swap = _run("oom")
    assert swap.state == SwapState.FAILED
    first = swap.error.splitlines()[0]
    assert "out of memory" in first.lower(), first
    assert "Engine core initialization failed" not in first


def test_a_worker_rank_crash_fails_the_swap_and_names_the_worker(topology, model_factory):
    model_factory("pair", repo="sim/worker-crash", nodes=2)
    started = time.monotonic()
    swap = _run("pair")
    assert swap.state == SwapState.FAILED
    worker = topology.workers[0].name
    assert f"on {worker} (worker)" in swap.error.splitlines()[0], swap.error
    assert time.monotonic() - started < 30
    assert all(not topology.containers(node.name) for node in topology.nodes)


def test_the_hf_token_reaches_every_rank_and_no_argv_log_or_event(topology, model_factory, settings):
    secret = "hf_TopSecretValue123"
    model_factory("gated", repo="sim/gated-model", nodes=2)
    without = _run("gated")
    assert without.state == SwapState.FAILED
    assert "gated" in without.error.lower()
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "HF_TOKEN": secret}
    swap = _run("gated")
    assert swap.state == SwapState.READY, swap.error
    assert secret not in json.dumps(topology.records())
    assert secret not in " ".join(_messages(swap)) + json.dumps(swap.commands) + swap.error + json.dumps(swap.launcher)
    for node in topology.nodes:
        state_files = Path(node.dir, "containers").glob("*/state.json")
        assert all(secret not in path.read_text() for path in state_files), f"token in a container's config on {node}"
        ours = Path(node.dir, ".cache", "huggingface", "spark-control")
        # Only model downloads keep state there (their own directory); a swap's secrets file is gone.
        assert not [path for path in ours.glob("*") if path.name != "downloads"], "secrets file left"
        files = [path for path in ours.rglob("*") if path.is_file()]
        assert all(secret not in path.read_text(errors="replace") for path in files), f"token left on {node}"


def test_memory_settles_after_a_failed_swap_before_it_ends(topology, model_factory):
    model_factory("oom", repo="sim/oom")
    swap = _run("oom")
    messages = _messages(swap)
    stopping = next(i for i, m in enumerate(messages) if "stopping the container it launched" in m)
    assert any("memory settled" in m for m in messages[stopping:]), messages[stopping:]


def test_not_enough_memory_is_refused_with_the_numbers_unless_forced(topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model", gpu_memory_utilization=0.9)
    head = Node(topology.head.dir)
    set_usage(head, "someone-else", 60)
    try:
        started = time.time()
        swap = _run("tiny")
        assert swap.state == SwapState.FAILED
        assert f"memory on {topology.head.name}" in swap.error and "GiB available" in swap.error
        assert "0.9 x" in swap.error
        assert not [argv for argv in _launcher_calls(topology, started) if "exec" in argv], "launched anyway"
        forced = _run("tiny", force=True)
        memory = [c for c in forced.checks if c["name"].startswith("memory on")]
        assert memory and memory[-1]["warning"] and "forced" in memory[-1]["detail"]
    finally:
        set_usage(head, "someone-else", 0)


def test_a_launcher_env_that_renames_the_container_is_followed(clean_launcher, model_factory):
    _write_launcher_env(clean_launcher, "CONTAINER_NAME=renamed_node\n")
    model_factory("tiny", repo="sim/tiny-model")
    swap = _run("tiny")
    assert swap.state == SwapState.READY, swap.error
    assert swap.launcher["container"] == "renamed_node"
    assert clean_launcher.containers(clean_launcher.head.name) == ["renamed_node"]
    check = next(c for c in swap.checks if c["name"] == "launcher config")
    assert check["warning"] and "renames it from vllm_node" in check["detail"]
    assert any("Starting vLLM API server" in m for m in _messages(swap))  # the right container's log was followed


def test_a_head_address_that_is_not_the_launchers_local_ip_is_refused(clean_launcher, model_factory):
    _write_launcher_env(clean_launcher, "LOCAL_IP=10.0.0.99\n")
    model_factory("pair", repo="sim/big-model", nodes=2)
    swap = _run("pair")
    assert swap.state == SwapState.FAILED
    assert "Local IP (10.0.0.99) is not in the list of nodes" in swap.error
    assert all(not clean_launcher.containers(node.name) for node in clean_launcher.nodes)


def test_the_catalog_entry_speaks_the_launchers_language(topology, model_factory):
    for node in topology.nodes:
        topology.set_image(node.name, "vllm-node-tf5", "sha256:" + "ab" * 32)
    model_factory("tf5", repo="sim/tiny-model", image="vllm-node-tf5", container_env={"VLLM_USE_V1": "1"})
    started = time.time()
    swap = _run("tf5")
    assert swap.state == SwapState.READY, swap.error
    launch = [argv for argv in _launcher_calls(topology, started) if "exec" in argv][-1]
    head = launch[: launch.index("exec")]
    assert head[head.index("-t") + 1] == "vllm-node-tf5"
    assert head[head.index("-e") + 1] == "VLLM_USE_V1=1"
    runs = [r["argv"] for r in topology.records(prog="docker", since=started) if r["argv"][:1] == ["run"]]
    assert runs and "vllm-node-tf5" in runs[-1]
    assert cluster_settings_get().effective_container in topology.containers(topology.head.name)


def test_the_log_is_read_from_the_sparks_clock_not_ours(topology, model_factory):
    """A Spark whose clock is ten minutes behind this machine's: `docker logs --since <our time>` would skip every
    line of the new container."""
    model_factory("tiny", repo="sim/tiny-model")
    topology.set_node_env(topology.head.name, "SPARKSIM_CLOCK_OFFSET", "-600")
    try:
        swap = _run("tiny")
    finally:
        topology.set_node_env(topology.head.name, "SPARKSIM_CLOCK_OFFSET", None)
    assert swap.state == SwapState.READY, swap.error
    assert any("Starting vLLM API server" in m for m in _messages(swap)), "the container's log was not followed"
