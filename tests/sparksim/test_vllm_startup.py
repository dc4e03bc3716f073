"""The fake vLLM's start-up: vLLM's lines in vLLM's order, the memory check, ranks in their own containers."""

from __future__ import annotations

import time

import pytest

from sparksim import meminfo
from sparksim.common import Node
from tests.sparksim.conftest import served_models, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("memory_back_at_once")]


def nodes_arg(sim) -> str:
    return ",".join(node.ip for node in sim.nodes)


def log(sim, node=None) -> str:
    return sim.container_log((node or sim.head).name, "vllm_node")


def test_startup_lines_in_order(sim, shell):
    rc, out, _ = shell.launcher(
        f"--solo -d exec vllm serve sim/tiny-model --served-model-name t --port {sim.vllm_port}"
    )
    assert rc == 0, out
    wait_for(lambda: served_models(sim.vllm_port) == ["t"])
    text = log(sim)
    order = [
        "vLLM API server version",
        "non-default args:",
        "Initializing a V1 LLM engine",
        "Starting to load model sim/tiny-model...",
        "Loading safetensors checkpoint shards:   0% Completed | 0/4",
        "Loading safetensors checkpoint shards:  50% Completed | 2/4",
        "Loading safetensors checkpoint shards: 100% Completed | 4/4",
        "Loading weights took",
        "Model loading took",
        "torch.compile takes",
        "Available KV cache memory:",
        "Capturing CUDA graphs",
        "Graph capturing finished in",
        "init engine (profile, create kv cache, warmup model) took",
        f"Starting vLLM API server 0 on http://0.0.0.0:{sim.vllm_port}",
        "Application startup complete.",
    ]
    positions = [text.find(marker) for marker in order]
    assert -1 not in positions, [m for m, p in zip(order, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "Uvicorn running on" not in text
    # tqdm as docker's log keeps it: shard updates each on a line after a carriage return; a capture bar's updates
    # after carriage returns on one line, complete at its newline.
    assert "\rLoading safetensors checkpoint shards:  25% Completed | 1/4 [" in text
    capture = [line for line in text.split("\n") if "Capturing CUDA graphs (decode, FULL)" in line]
    assert len(capture) == 1
    updates = capture[0].split("\r")[1:]
    assert updates[0].startswith("Capturing CUDA graphs (decode, FULL):   0%|          | 0/35 [00:00<?, ?it/s]")
    assert len(updates) > 35 and updates[-1].startswith("Capturing CUDA graphs (decode, FULL): 100%|██████████| 35/35")
    # The engine holds about gpu_memory_utilization x total.
    avail = sim.mem_available_kb(sim.head.name)
    assert avail is not None and avail < 0.2 * meminfo.MEM_TOTAL_KB


def test_page_cache_makes_the_memory_check_fail(sim, shell):
    head = Node(sim.head.dir)
    meminfo.set_page_cache(head, 40)
    try:
        values = meminfo.read_meminfo(sim.head.meminfo_path)
        assert values["MemAvailable"] - values["MemFree"] > 39 * meminfo.KIB_PER_GIB  # cache is reclaimable
        rc, _, _ = shell.launcher(f"--solo -d exec vllm serve sim/tiny-model --port {sim.vllm_port}")
        assert rc == 0
        wait_for(lambda: "Engine core initialization failed" in log(sim))
        lines = log(sim).splitlines()
        assert lines[-1].endswith(
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
        )
        cause = [line for line in lines if "ValueError: Free memory on device (" in line]
        assert cause and "on startup is less than desired GPU memory utilization (0.9, " in cause[0]
        assert lines.index(cause[0]) < len(lines) - 1
        # A lower utilization fits next to the cache.
        shell.launcher("--solo stop")
        rc, _, _ = shell.launcher(
            f"--solo -d exec vllm serve sim/tiny-model --served-model-name low --port {sim.vllm_port} "
            "--gpu-memory-utilization 0.6"
        )
        wait_for(lambda: served_models(sim.vllm_port) == ["low"])
    finally:
        meminfo.set_page_cache(head, meminfo.DEFAULT_PAGE_CACHE_GIB)


def test_memory_comes_back_gradually_after_stop(sim, shell):
    sim.set_node_env(sim.head.name, "SPARKSIM_MEM_RELEASE_SECONDS", "1.5")
    try:
        shell.launcher(f"--solo -d exec vllm serve sim/tiny-model --served-model-name g --port {sim.vllm_port}")
        wait_for(lambda: served_models(sim.vllm_port) == ["g"])
        loaded = sim.mem_available_kb(sim.head.name)
        shell.launcher("--solo stop")
        soon = sim.mem_available_kb(sim.head.name)
        assert soon < loaded + 0.8 * (meminfo.MEM_TOTAL_KB - loaded)  # not all back yet
        # Launching now fails the start-up check.
        shell.launcher(f"--solo -d exec vllm serve sim/tiny-model --port {sim.vllm_port}")
        wait_for(lambda: "Free memory on device" in log(sim))
        shell.launcher("--solo stop")
        time.sleep(1.8)
        assert sim.mem_available_kb(sim.head.name) > 0.9 * meminfo.MEM_TOTAL_KB
    finally:
        sim.set_node_env(sim.head.name, "SPARKSIM_MEM_RELEASE_SECONDS", "0")


def test_gated_model_needs_a_token_on_every_rank(sim, shell):
    base = f"vllm serve sim/gated-model --served-model-name gated --port {sim.vllm_port} -tp 2"
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} -d exec {base}")
    assert rc == 0, out
    wait_for(lambda: "Cannot access gated repo for url https://huggingface.co/sim/gated-model" in log(sim))
    assert "huggingface_hub.errors.GatedRepoError: 401 Client Error." in log(sim)
    wait_for(lambda: "GatedRepoError" in log(sim, sim.workers[0]))
    shell.launcher(f"-n {nodes_arg(sim)} stop")
    # -e HF_TOKEN copies the token into the head's container only: the worker rank still fails.
    rc, out, _ = shell.run(
        f"HF_TOKEN=hf_x ~/spark-vllm-docker/launch-cluster.sh -e HF_TOKEN -n {nodes_arg(sim)} -d exec {base}"
    )
    assert rc == 0, out
    wait_for(lambda: "GatedRepoError" in log(sim, sim.workers[0]))
    assert "GatedRepoError" not in log(sim)
    assert served_models(sim.vllm_port) == []
    shell.launcher(f"-n {nodes_arg(sim)} stop")
    # A token file in each node's HF cache ($HF_HOME/token in the container) works on every rank.
    for node in sim.nodes:
        shell.run("echo hf_file > ~/.cache/huggingface/token", node=node.name)
    try:
        rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} -d exec {base}")
        wait_for(lambda: served_models(sim.vllm_port) == ["gated"])
    finally:
        for node in sim.nodes:
            shell.run("rm -f ~/.cache/huggingface/token", node=node.name)


def test_worker_crash_leaves_the_head_waiting_quietly(sim, shell):
    rc, out, _ = shell.launcher(
        f"-n {nodes_arg(sim)} -d exec vllm serve sim/worker-crash --served-model-name w --port {sim.vllm_port} -tp 2"
    )
    assert rc == 0, out
    wait_for(lambda: "CUDA error: unspecified launch failure" in log(sim, sim.workers[0]))
    assert "Traceback (most recent call last):" in log(sim, sim.workers[0])
    time.sleep(0.8)
    head = log(sim)
    assert "Traceback" not in head and "Loading safetensors" not in head
    assert "Initializing a V1 LLM engine" in head
    assert served_models(sim.vllm_port) == []


def test_ray_worker_rank_logs_in_the_worker_container(sim, shell):
    rc, out, err = shell.launcher(
        f"-n {nodes_arg(sim)} --ray -d exec vllm serve sim/tiny-model --served-model-name r "
        f"--port {sim.vllm_port} -tp 2"
    )
    assert rc == 0, out
    assert "Adding --distributed-executor-backend ray for Ray mode." in err
    wait_for(lambda: served_models(sim.vllm_port) == ["r"])
    worker = log(sim, sim.workers[0])
    assert "(RayWorkerWrapper pid=" in worker and "Loading safetensors checkpoint shards" in worker
    assert "RayWorkerWrapper" not in log(sim)
