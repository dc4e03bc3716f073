"""The swap engine end to end: real paramiko, real sshd, sparksim's launcher, docker and vLLM."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from django_tasks.base import TaskResultStatus
from django_tasks.signals import task_enqueued
from django_tasks_db.models import DBTaskResult

from cluster.models import Service, SparkHost
from cluster.services import cluster_settings_get
from sparkcontrol.worker import WakeableWorker
from swaps import runner
from swaps.launch import vllm_argv
from swaps.models import ServingState, Swap, SwapState
from swaps.runner import swap_run
from swaps.services import swap_cancel, swap_request

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _run(model_key: str, *, dry_run: bool = False) -> Swap:
    swap = swap_request(model_key=model_key, dry_run=dry_run, actor="test")
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    return swap


def _run_until_loading(model_key: str) -> tuple[Swap, threading.Thread]:
    """Start a swap's runner in a thread and return once the swap is loading."""
    swap = swap_request(model_key=model_key, dry_run=False, actor="test")
    runner = threading.Thread(target=swap_run, kwargs={"swap_id": str(swap.id)})
    runner.start()
    deadline = time.monotonic() + 20
    while Swap.objects.get(pk=swap.pk).state != SwapState.LOADING:
        assert time.monotonic() < deadline, "never reached loading"
        time.sleep(0.05)
    return swap, runner


def _messages(swap: Swap) -> list[str]:
    return list(swap.events.order_by("seq").values_list("message", flat=True))


def _states(swap: Swap) -> list[str]:
    return list(swap.events.filter(kind="state").order_by("seq").values_list("state", flat=True))


def _models_on(sim) -> list[str]:  # type: ignore[no-untyped-def]
    data = httpx.get(f"http://127.0.0.1:{sim.vllm_port}/v1/models", timeout=2).json()
    return [item["id"] for item in data["data"]]


def test_one_node_swap_reaches_ready(topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    swap = _run("tiny")
    assert swap.state == SwapState.READY, swap.error
    assert _states(swap) == ["queued", "preflight", "stopping", "launching", "loading", "ready"]
    assert _models_on(topology) == ["tiny"]
    serving = ServingState.objects.get(pk=1)
    assert serving.model_key == "tiny" and serving.swap_id == swap.id
    assert Service.objects.get(key="vllm").models_served == ["tiny"]  # what the vLLM tile's probe expects
    launch = [r for r in topology.records(prog="launch-cluster.sh") if "exec" in r["argv"]][-1]
    assert "-d" in launch["argv"] and "--solo" in launch["argv"]
    assert topology.containers(topology.head.name) == [cluster_settings_get().effective_container]
    assert any("Starting vLLM API server" in m for m in _messages(swap))  # the log was followed


def test_two_node_swap_runs_on_both_nodes(topology, model_factory):
    model_factory("pair", repo="sim/big-model", nodes=2)
    swap = _run("pair")
    assert swap.state == SwapState.READY, swap.error
    launch = [r for r in topology.records(prog="launch-cluster.sh") if "exec" in r["argv"]][-1]
    argv = launch["argv"]
    assert argv[argv.index("-n") + 1] == ",".join(node.ip for node in topology.nodes)
    assert argv[argv.index("-tp") + 1] == "2"
    for node in topology.nodes:
        assert topology.containers(node.name), f"no container on {node.name}"


def test_local_model_is_mounted_read_only_and_served(topology, model_factory):
    path = topology.make_local_model("ten31-v2")
    model_factory("ten31", repo="", local_path=path)
    swap = _run("ten31")
    assert swap.state == SwapState.READY, swap.error
    runs = [r for r in topology.records(prog="docker") if r["argv"][:1] == ["run"]]
    assert any(f"{path}:{path}:ro" in r["argv"] for r in runs)
    assert _models_on(topology) == ["ten31"]


def test_swap_replaces_the_running_model(topology, model_factory):
    model_factory("first", repo="sim/tiny-model")
    model_factory("second", repo="sim/tiny-model")
    assert _run("first").state == SwapState.READY
    swap = _run("second")
    assert swap.state == SwapState.READY, swap.error
    assert _models_on(topology) == ["second"]
    assert not any("Skipping launch" in m for m in _messages(swap))


@pytest.mark.parametrize(
    "repo, cause",
    [
        ("sim/fail-launch", "the launcher exited 1"),
        ("sim/oom", "out of memory"),
        ("sim/vanish", "disappeared"),
    ],
)
def test_failure_modes_end_failed_with_cause_and_log_tail(topology, model_factory, repo, cause):
    model_factory("bad", repo=repo)
    swap = _run("bad")
    assert swap.state == SwapState.FAILED
    assert cause.lower() in swap.error.lower()
    assert "last log lines" in swap.error
    assert swap.active is None
    assert topology.containers(topology.head.name) == []


def test_never_ready_times_out(topology, model_factory):
    cluster = cluster_settings_get()
    cluster.swap_timeout_s = 10
    cluster.save()
    model_factory("stuck", repo="sim/never-ready")
    started = time.monotonic()
    swap = _run("stuck")
    assert swap.state == SwapState.FAILED and "swap timeout" in swap.error
    assert time.monotonic() - started < 20


def test_silent_compile_is_not_death(topology, model_factory):
    topology.set_silent_seconds(2)
    model_factory("quiet", repo="sim/silent-compile")
    swap = _run("quiet")
    assert swap.state == SwapState.READY, swap.error


def _engine_pids(sim) -> list[int]:  # type: ignore[no-untyped-def]
    pids = []
    for pid in sim.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"vllm\0serve" in fh.read():
                    pids.append(pid)
        except OSError:
            continue
    return pids


def test_an_engine_killed_without_a_word_while_loading_fails_the_swap_at_once(topology, model_factory):
    """The kernel's OOM killer sends SIGKILL: no traceback, the container stays up (sleep infinity), the log just
    stops. Only the look for the process can tell, and it must, long before the swap timeout."""
    topology.set_load_seconds(30)
    model_factory("slow", repo="sim/tiny-model")
    swap, runner = _run_until_loading("slow")
    deadline = time.monotonic() + 20
    while not (pids := _engine_pids(topology)):
        assert time.monotonic() < deadline, "the engine never started"
        time.sleep(0.05)
    time.sleep(1.5)  # seen alive by at least one look: from then on its absence is death
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    runner.join(timeout=30)
    swap.refresh_from_db()
    assert swap.state == SwapState.FAILED, swap.error
    assert "vLLM exited while loading" in swap.error and "still up" in swap.error, swap.error
    assert time.monotonic() - killed < 10, "found by the swap timeout, not by the process watch"
    assert topology.containers(topology.head.name) == []


def test_cancel_during_loading_stops_the_container(topology, model_factory):
    topology.set_load_seconds(10)
    model_factory("slow", repo="sim/tiny-model")
    swap, runner = _run_until_loading("slow")
    swap_cancel(swap_id=str(swap.id), actor="test")
    runner.join(timeout=20)
    swap.refresh_from_db()
    assert swap.state == SwapState.CANCELLED
    assert topology.containers(topology.head.name) == []
    messages = _messages(swap)
    stopping = next(i for i, m in enumerate(messages) if "cancelled: stopping the container it launched" in m)
    assert any("memory settled" in m for m in messages[stopping:]), "a cancelled launch's memory must settle too"


def test_a_cancel_asked_during_the_pre_flight_stops_before_the_stop_and_keeps_the_checks(topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    swap = swap_request(model_key="tiny", dry_run=False, actor="test")
    Swap.objects.filter(pk=swap.pk).update(cancel_requested=True)  # asked while it was queued or checking
    before = len(topology.records())
    swap_run(swap_id=str(swap.id))
    swap.refresh_from_db()
    assert swap.state == SwapState.CANCELLED
    assert swap.checks and all(check["ok"] for check in swap.checks), swap.checks
    assert "stopping" not in _states(swap)
    new = topology.records()[before:]
    assert not [r for r in new if r["prog"] == "launch-cluster.sh" and ({"exec", "stop"} & set(r["argv"]))]


def test_dry_run_changes_nothing_on_the_nodes(topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    before = len(topology.records())
    swap = _run("tiny", dry_run=True)
    assert swap.state == SwapState.READY and swap.dry_run
    new = topology.records()[before:]
    assert all(r["prog"] != "vllm" for r in new)
    assert not [r for r in new if r["prog"] == "launch-cluster.sh" and ({"exec", "stop"} & set(r["argv"]))]
    assert not [r for r in new if r["prog"] == "docker" and r["argv"][:1] in (["run"], ["stop"], ["exec"])]
    assert any("launch-cluster.sh" in c and " exec vllm serve " in c for c in swap.commands)
    assert topology.containers(topology.head.name) == []
    assert not ServingState.objects.filter(model_key="tiny").exists()


def test_hostile_catalog_values_arrive_intact(topology, model_factory):
    hostile = ["--chat-template", 'a b \'c\' "d" $(touch ~/pwned) `id`; x y ü {"k": [1]}', "--trust-remote-code"]
    entry = model_factory("hostile", repo="sim/tiny-model", vllm_args=hostile, served_model_name="we'ird$(x)`id`")
    swap = _run("hostile")
    assert swap.state == SwapState.READY, swap.error
    record = [r for r in topology.records(prog="vllm") if r.get("event") == "start"][-1]
    assert ["vllm", *record["argv"]] == vllm_argv(entry=entry, cluster=cluster_settings_get())


def test_unknown_or_changed_host_key_sends_no_command(topology, model_factory):
    model_factory("tiny", repo="sim/tiny-model")
    head = SparkHost.objects.get(role="head", enabled=True)
    other = topology.workers[0].host_key_line
    before = len(topology.records())
    head.host_key = other
    head.save()
    swap = _run("tiny")
    assert swap.state == SwapState.FAILED and "host key changed" in swap.error
    head.host_key = ""
    head.save()
    swap = _run("tiny")
    assert swap.state == SwapState.FAILED and "no pinned host key" in swap.error
    assert topology.records()[before:] == []


def test_a_runner_whose_swap_was_reaped_stops_and_touches_nothing(topology, model_factory, settings):
    """A slow (not dead) worker must not overwrite `interrupted` nor stop a container the next swap owns."""
    from swaps.services import swaps_reap_stale

    topology.set_load_seconds(30)
    model_factory("slow", repo="sim/tiny-model")
    swap, runner = _run_until_loading("slow")
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "HEARTBEAT_STALE_SECONDS": 0}
    Swap.objects.filter(pk=swap.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert [s.pk for s in swaps_reap_stale()] == [swap.pk]
    stops_before = len([r for r in topology.records(prog="launch-cluster.sh") if "stop" in r["argv"]])
    runner.join(timeout=20)
    assert not runner.is_alive()
    swap.refresh_from_db()
    assert swap.state == SwapState.INTERRUPTED and swap.active is None
    stops_after = len([r for r in topology.records(prog="launch-cluster.sh") if "stop" in r["argv"]])
    assert stops_after == stops_before, "the superseded runner stopped a container it no longer owns"
    assert topology.containers(topology.head.name) == [cluster_settings_get().effective_container]


def test_the_swaps_worker_sends_a_swaps_first_command_before_claiming_it_and_the_run_uses_it(topology, model_factory):
    """Woken by the enqueue, the swaps' worker asks the head's launcher before its claim (`swap_prepare`); the run
    takes that answer instead of asking again, and a probe prepared for a swap run elsewhere does not stay forever."""
    # A dry run's memory check is final: ask for little, as the nodes may still settle after an earlier test's stop.
    model_factory("tiny", repo="sim/tiny-model", gpu_memory_utilization=0.5)
    worker = WakeableWorker(interval=1.0, queue_names=["swaps"])
    since = time.time()
    task_enqueued.connect(worker._on_enqueued, weak=False)
    try:
        swap = swap_request(model_key="tiny", dry_run=True, actor="test")
    finally:
        task_enqueued.disconnect(worker._on_enqueued)
    assert [swap_id for _, swap_id in worker.woken] == [str(swap.id)]
    assert str(swap.id) not in runner._prepared  # nothing is sent from the request's thread
    claimed = worker._claim_woken()
    assert claimed is not None and claimed.status == TaskResultStatus.RUNNING
    assert str(swap.id) in runner._prepared  # sent before the claim, kept for the run
    worker.run_task(claimed)
    swap.refresh_from_db()
    assert swap.state == SwapState.READY, swap.error
    assert DBTaskResult.objects.get(pk=claimed.pk).status == TaskResultStatus.SUCCESSFUL
    helps = [r for r in topology.records(prog="launch-cluster.sh") if r["t"] >= since and "--help" in r["argv"]]
    assert len(helps) == 1 and str(swap.id) not in runner._prepared

    runner.swap_prepare(swap_id="claimed-elsewhere")
    runner._prepared["claimed-elsewhere"] = (runner._prepared["claimed-elsewhere"][0], time.monotonic() - 61)
    runner.swap_prepare(swap_id="next")
    assert "claimed-elsewhere" not in runner._prepared and "next" in runner._prepared
    runner._prepared.clear()
