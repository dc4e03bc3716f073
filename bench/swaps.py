"""M1 (readiness lag), M2 (dispatch latency) and M6 (swap overhead), with their peer-style baselines.

Real swaps go through the API of the running service onto sparksim; the instants come from sparksim's records
(`time.time()` in the fake programs: the launcher's first line, the fake vLLM's start and the moment it listens)
and from the Swap row (`finished_at`, written when the row becomes `ready`). The baselines watch the very same
fake vLLM start:

- llama-swap style: wait 250 ms after the engine process starts, then `GET /v1/models` every 1 s;
- GPUStack style: `GET /v1/models` every 3 s, at a phase unrelated to the start (a periodic health checker);
- paramiko with default socket options (M2): exec the launcher's first command on an open connection (warm) and
  on a new connection (cold), from the same machine, against the same sshd.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import summary, wait_port_closed
from bench.harness import MODEL_2NODE, Harness

LLAMA_SWAP_WAIT = 0.25
LLAMA_SWAP_EVERY = 1.0
GPUSTACK_EVERY = 3.0
# How often the bench looks for the engine's start while a swap runs. The pollers are scheduled from the recorded
# start, not from when it was seen, so a look every 50 ms serves them as well as every 5 ms did, and the bench wakes
# 20 times a second rather than 200 through the swap's checks, stop and launch: the floor replay it is compared with
# runs with no watch beside it. (Whether the faster watch slowed the simulated programs could not be told on a
# machine whose processor speed swings ×1.7: 16 swaps each, share 196 ms with it, 97 ms without it, -6 ms with the
# same watch beside the replay too.)
ENGINE_WATCH_SECONDS = 0.05
TERMINAL = {"ready", "failed", "cancelled", "interrupted"}


class BenchError(RuntimeError):
    """The benchmark could not take a measurement (a swap failed, a record is missing)."""


@dataclass
class SwapSample:
    """The instants of one real swap (unix seconds) and what the baselines saw."""

    posted: float
    accepted: float
    launcher_first: float
    vllm_start: float
    port_open: float
    ready: float
    states: dict[str, float] = field(default_factory=dict)
    llama_swap: float | None = None
    gpustack: float | None = None

    @property
    def load(self) -> float:
        return self.port_open - self.vllm_start

    @property
    def lag(self) -> float:
        return self.ready - self.port_open

    @property
    def dispatch(self) -> float:
        return self.launcher_first - self.accepted

    @property
    def overhead(self) -> float:
        return (self.ready - self.posted) - self.load

    def baseline_overhead(self, detected: float | None) -> float | None:
        return None if detected is None else (detected - self.posted) - self.load


class Poller(threading.Thread):
    """A peer-style readiness poller: GETs `/v1/models` at `first`, `first + every`, ... until the model is listed."""

    def __init__(self, url: str, model: str, first: float, every: float, give_up: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.model = model
        self.first = first
        self.every = every
        self.give_up = give_up
        self.detected: float | None = None

    def run(self) -> None:
        due = self.first
        with httpx.Client(timeout=1.0) as client:
            while due < self.give_up:
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                try:
                    # A fresh connection per poll, as these pollers do (the server may have restarted).
                    response = client.get(self.url, headers={"Connection": "close"})
                    if self.model in [item.get("id") for item in response.json().get("data", [])]:
                        self.detected = time.time()
                        return
                except (httpx.HTTPError, ValueError, AttributeError):
                    pass
                due += self.every


def _records(harness: Harness, *, prog: str, event: str, since: float, node: str | None = None) -> list[dict]:
    found = [r for r in harness.sim.records(prog=prog, event=event) if r.get("t", 0) >= since]
    if node is not None:
        found = [r for r in found if r.get("node") == node]
    return sorted(found, key=lambda r: r["t"])


class RecordTail:
    """sparksim's record file, read on from where the last read ended.

    The bench watches for the engine's start while a swap runs (every 5 ms when this was written). Parsing the
    whole file each time cost 2-5 ms of CPU per look once it held a few hundred swaps' records (~55 a swap), i.e.
    up to half a core taken from the simulated Sparks' programs and the service on this 2-core machine during the
    swap, and never during the floor replay it is compared with: the watch itself made the swap look slower. Only
    new lines are parsed.
    """

    def __init__(self, harness: Harness) -> None:
        self.path = Path(harness.sim.root) / "record.jsonl"
        try:
            self.offset = self.path.stat().st_size
        except FileNotFoundError:
            self.offset = 0
        self.partial = b""
        self.records: list[dict] = []

    def poll(self) -> list[dict]:
        """Every record appended since this tail was made (a line still being written waits for its end)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return self.records
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            try:
                self.records.append(json.loads(line))
            except ValueError:
                continue
        return self.records


def _engine_start(harness: Harness, since: float, deadline: float, *, tail: RecordTail | None = None) -> float:
    """When the head's `vllm serve` process started (its first line), waiting for it to appear. With `tail` (made
    before the swap was requested), only the records written since are read at each look."""
    head = harness.sim.head.name
    while time.time() < deadline:
        found = (
            _records(harness, prog="vllm", event="start", since=since, node=head)
            if tail is None
            else [
                r
                for r in tail.poll()
                if r.get("prog") == "vllm"
                and r.get("event") == "start"
                and r.get("node") == head
                and r.get("t", 0) >= since
            ]
        )
        starts = [r for r in found if r["argv"][:1] == ["serve"] and "--headless" not in r["argv"]]
        if starts:
            return min(r["t"] for r in starts)
        time.sleep(ENGINE_WATCH_SECONDS)
    raise BenchError("the head's vLLM never started")


def _swap_row(swap_id: str) -> dict[str, Any]:
    from swaps.models import Swap

    return Swap.objects.filter(pk=swap_id).values("state", "finished_at", "error").first() or {}


def _wait_terminal(swap_id: str, timeout: float) -> dict[str, Any]:
    """The swap's row once it has ended. Its instants come from the row (`finished_at`), not from this poll: a look
    every 50 ms is as exact as one every 10 ms and costs the swap being measured less of the machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _swap_row(swap_id)
        if row.get("state") in TERMINAL:
            return row
        time.sleep(0.05)
    raise BenchError(f"swap {swap_id} did not end within {timeout:.0f} s")


def _state_times(swap_id: str) -> dict[str, float]:
    from swaps.models import SwapEvent

    times: dict[str, float] = {}
    for state, at in SwapEvent.objects.filter(swap_id=swap_id, kind="state").order_by("seq").values_list("state", "at"):
        times.setdefault(state, at.timestamp())
    return times


def post_swap(harness: Harness, model: str, *, dry_run: bool = False) -> tuple[str, float, float]:
    """POST /api/swap; returns (swap id, sent at, answer received at)."""
    client = harness.client
    sent = time.time()
    response = client.post(
        f"{harness.url}/api/swap", json={"model": model, "dry_run": dry_run}, headers=harness.bearer("operate")
    )
    received = time.time()
    if response.status_code != 202:
        raise BenchError(f"POST /api/swap answered {response.status_code}: {response.text[:300]}")
    return response.json()["id"], sent, received


def idle_cluster(harness: Harness, *, settle_timeout: float = 15.0) -> None:
    """Nothing running on the nodes and their memory back, so every measured swap starts from the same place.

    The simulated Sparks give a stopped container's memory back over a second and a half, as a GB10 does over
    seconds; a swap posted before that finds memory short at pre-flight and rightly waits for it to settle after
    its stop. An idle cluster is one whose memory has come back: a swap onto it is what M6 measures (a swap that
    replaces a running model, settle included, is the "replacing" figure).
    """
    harness.sim.stop_containers()
    wait_port_closed(harness.sim.vllm_port)
    names = [node.name for node in harness.sim.nodes]
    deadline = time.monotonic() + settle_timeout
    last = {name: harness.sim.mem_available_kb(name) for name in names}
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = {name: harness.sim.mem_available_kb(name) for name in names}
        if now == last:
            return
        last = now
    raise BenchError(f"the simulated nodes' memory kept moving for {settle_timeout:g} s after the stop: {last}")


def one_swap(harness: Harness, *, model: str, rng: random.Random, replace: bool = False) -> SwapSample:
    """One real swap with both baseline pollers watching the same engine start."""
    from catalog.models import ModelEntry

    if not replace:
        idle_cluster(harness)
    served = ModelEntry.objects.get(key=model).effective_served_name
    tail = RecordTail(harness)
    swap_id, posted, accepted = post_swap(harness, model)
    vllm_start = _engine_start(harness, posted, deadline=posted + 60, tail=tail)
    url = f"http://127.0.0.1:{harness.sim.vllm_port}/v1/models"
    pollers = {
        "llama_swap": Poller(url, served, vllm_start + LLAMA_SWAP_WAIT, LLAMA_SWAP_EVERY, vllm_start + 120),
        "gpustack": Poller(url, served, vllm_start + rng.uniform(0, GPUSTACK_EVERY), GPUSTACK_EVERY, vllm_start + 120),
    }
    for poller in pollers.values():
        poller.start()
    row = _wait_terminal(swap_id, timeout=120)
    if row["state"] != "ready":
        raise BenchError(f"swap {swap_id} ended {row['state']}: {row.get('error')}")
    for poller in pollers.values():
        poller.join(timeout=10)
    head = harness.sim.head.name
    launcher = _records(harness, prog="launch-cluster.sh", event="start", since=posted, node=head)
    port_open = _records(harness, prog="vllm", event="port_open", since=posted, node=head)
    if not launcher or not port_open:
        raise BenchError(f"swap {swap_id}: sparksim recorded no launcher start or no open port")
    return SwapSample(
        posted=posted,
        accepted=accepted,
        launcher_first=launcher[0]["t"],
        vllm_start=vllm_start,
        port_open=port_open[0]["t"],
        ready=row["finished_at"].timestamp(),
        states=_state_times(swap_id),
        llama_swap=pollers["llama_swap"].detected,
        gpustack=pollers["gpustack"].detected,
    )


def _ms(values: list[float | None]) -> list[float]:
    return [value * 1000 for value in values if value is not None]


def run_swaps(harness: Harness, *, count: int, replace_count: int, floor_every: int, log: Any) -> dict[str, Any]:
    """M1, M6 and warm M2 from `count` swaps of the two-node model onto an idle cluster; after every `floor_every`-th
    swap, one floor replay, paired with that swap for Spark Control's share."""
    rng = random.Random(7)
    samples: list[SwapSample] = []
    replay = FloorReplay(harness)
    floors: list[float] = []
    shares: list[float] = []
    floor_steps: dict[str, list[float]] = {}
    try:
        for index in range(count):
            samples.append(one_swap(harness, model=MODEL_2NODE, rng=rng))
            last = samples[-1]
            log(
                f"  swap {index + 1}/{count}: lag {last.lag * 1000:.1f} ms, overhead {last.overhead * 1000:.0f} ms, "
                f"dispatch {last.dispatch * 1000:.1f} ms"
            )
            if index % floor_every == floor_every - 1:
                floor, steps = replay.once()
                floors.append(floor)
                shares.append(last.overhead * 1000 - floor)
                for name, value in steps.items():
                    floor_steps.setdefault(name, []).append(value)
                log(f"  floor replay: {floor:.0f} ms; this swap's share {shares[-1]:.0f} ms")
    finally:
        replay.close()
    replaced: list[SwapSample] = []
    for index in range(replace_count):
        replaced.append(one_swap(harness, model=MODEL_2NODE, rng=rng, replace=True))
        log(f"  replacing swap {index + 1}/{replace_count}: overhead {replaced[-1].overhead * 1000:.0f} ms")
    # The first swap of the run opened the SSH connections: it is a cold dispatch, not a warm one.
    warm = samples[1:] if len(samples) > 1 else samples
    phases = _phases(samples)
    return {
        "m1": {
            "ours": summary(_ms([s.lag for s in samples])),
            "llama_swap": summary(_ms([None if s.llama_swap is None else s.llama_swap - s.port_open for s in samples])),
            "gpustack": summary(_ms([None if s.gpustack is None else s.gpustack - s.port_open for s in samples])),
        },
        "m6": {
            "ours": summary(_ms([s.overhead for s in samples])),
            "llama_swap": summary(_ms([s.baseline_overhead(s.llama_swap) for s in samples])),
            "gpustack": summary(_ms([s.baseline_overhead(s.gpustack) for s in samples])),
            "load_s": summary([s.load for s in samples]),
            "phases_ms": phases,
            "replacing": summary(_ms([s.overhead for s in replaced])) if replaced else None,
            "floor": {**summary(floors), "phases_ms": {name: summary(v) for name, v in floor_steps.items()}},
            "share": summary(shares),
        },
        "m2_warm": summary(_ms([s.dispatch for s in warm])),
        "first_dispatch_ms": samples[0].dispatch * 1000 if samples else None,
    }


def _phases(samples: list[SwapSample]) -> dict[str, dict[str, Any]]:
    """Median time in each step of a swap (from the state events), to show where the overhead goes."""
    steps = {
        "post -> preflight starts": lambda s: s.states.get("preflight", 0) - s.posted,
        "preflight (SSH checks)": lambda s: s.states.get("stopping", 0) - s.states.get("preflight", 0),
        "stopping (launcher stop, containers gone)": lambda s: (
            s.states.get("launching", 0) - s.states.get("stopping", 0)
        ),
        "launching (launcher -d exec)": lambda s: s.states.get("loading", 0) - s.states.get("launching", 0),
        "loading starts -> engine process starts": lambda s: s.vllm_start - s.states.get("loading", 0),
        "engine load (subtracted)": lambda s: s.load,
        "port open -> ready (M1)": lambda s: s.lag,
    }
    return {name: summary(_ms([how(s) for s in samples])) for name, how in steps.items()}


# --- M2 cold and the SSH baselines ----------------------------------------------------------------------------------


def _toggle_key_paths(harness: Harness) -> None:
    """Point the hosts at the same key through another path: the pool sees a changed identity and opens new
    connections, as it does for an edited host, so the next swap's dispatch is cold."""
    from cluster.models import SparkHost

    key = Path(harness.sim.client_key_path)
    other = key.with_name(key.name + ".bench-link")
    if not other.exists():
        other.symlink_to(key)
    for host in SparkHost.objects.filter(enabled=True):
        host.key_path = str(key) if host.key_path == str(other) else str(other)
        host.save(update_fields=["key_path"])


def run_cold_dispatch(harness: Harness, *, count: int) -> dict[str, Any]:
    """Dispatch latency when the service must open new SSH connections (two-node model: head and worker)."""
    samples = []
    head = harness.sim.head.name
    for _ in range(count):
        _toggle_key_paths(harness)
        swap_id, sent, accepted = post_swap(harness, MODEL_2NODE, dry_run=True)
        row = _wait_terminal(swap_id, timeout=60)
        if row["state"] != "ready":
            raise BenchError(f"dry run {swap_id} ended {row['state']}: {row.get('error')}")
        launcher = _records(harness, prog="launch-cluster.sh", event="start", since=sent, node=head)
        if not launcher:
            raise BenchError(f"dry run {swap_id}: no launcher start recorded")
        samples.append((launcher[0]["t"] - accepted) * 1000)
        time.sleep(0.05)
    return summary(samples)


def _help_command(harness: Harness) -> str:
    from cluster.services import cluster_settings_get
    from swaps.launch import build_help_command

    return build_help_command(cluster=cluster_settings_get())


def _first_line_after(harness: Harness, since: float) -> float:
    head = harness.sim.head.name
    for _ in range(200):
        found = _records(harness, prog="launch-cluster.sh", event="start", since=since, node=head)
        if found:
            return found[0]["t"]
        time.sleep(0.005)
    raise BenchError("the launcher's first line was not recorded")


def _paramiko_default(harness: Harness) -> Any:
    import paramiko

    node = harness.sim.head
    client = paramiko.SSHClient()
    client.load_host_keys(harness.sim.known_hosts_path)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        node.host,
        port=node.port,
        username=node.user,
        key_filename=harness.sim.client_key_path,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def _paramiko_exec(client: Any, command: str) -> None:
    _, stdout, _ = client.exec_command(command)
    stdout.read()
    stdout.channel.recv_exit_status()


class FloorReplay:
    """The simulator's floor for M6: the remote commands of a two-node swap replayed back to back from here, on open
    SSH connections, with no HTTP, queue, database or events, and readiness seen by a 1 ms port watch. What a swap
    runs side by side (a command on every node, the fit estimate beside the container and cache checks) runs side by
    side here too, so the floor costs what the swap's remote work costs and nothing more.

    Spark Control's own share of a swap's overhead is M6 minus this; replays are interleaved with the real swaps so
    both see the same machine.
    """

    def __init__(self, harness: Harness) -> None:
        from catalog.models import ModelEntry
        from cluster.services import cluster_settings_get
        from cluster.ssh import spark_connect_all
        from swaps.launch import LauncherCapabilities, build_capabilities_command, build_launch_command
        from swaps.preflight import preflight_nodes

        self.harness = harness
        self.entry = ModelEntry.objects.get(key=MODEL_2NODE)
        self.cluster = cluster_settings_get()
        self.nodes, _ = preflight_nodes(entry=self.entry)
        connections = spark_connect_all(self.nodes)
        self.connections = connections
        self.head = connections[self.nodes[0].name]
        self.others = [connections[node.name] for node in self.nodes[1:]]
        capabilities = LauncherCapabilities.parse(
            self.head.run(build_capabilities_command(cluster=self.cluster)).stdout
        )
        self.capabilities = capabilities
        self.launch = build_launch_command(
            entry=self.entry, cluster=self.cluster, nodes=self.nodes, capabilities=capabilities
        )
        self.client = httpx.Client(timeout=2.0, trust_env=False)

    def _on_all(self, command: str) -> None:
        threads = [threading.Thread(target=other.run, args=(command,)) for other in self.others]
        for thread in threads:
            thread.start()
        self.head.run(command)
        for thread in threads:
            thread.join()

    def _fit(self) -> None:
        """The pre-flight's fit estimate: its commands (the cached config and weights, the nodes' memory) run beside
        the container and cache checks in a swap, so they do here."""
        from modelfiles.services import model_fit_check
        from swaps.preflight import VLLM_DEFAULT_GPU_MEMORY_UTILIZATION

        model_fit_check(
            entry=self.entry,
            connections=self.connections,
            nodes=self.nodes,
            cluster=self.cluster,
            default_utilization=VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
        )

    def once(self) -> tuple[float, dict[str, float]]:
        """One replay: (overhead in ms, the time of each step in ms)."""
        import socket

        from swaps.launch import (
            CLOCK_COMMAND,
            MEMINFO_COMMAND,
            build_capabilities_command,
            build_check_config_command,
            build_container_list_command,
            build_hf_cache_check_command,
            build_stop_command,
        )

        harness, cluster = self.harness, self.cluster
        url = f"http://127.0.0.1:{harness.sim.vllm_port}/v1/models"
        idle_cluster(harness)
        started = time.time()
        listing = build_container_list_command(container=cluster.effective_container)
        self.head.run(build_capabilities_command(cluster=cluster))
        self.head.run(
            build_check_config_command(
                entry=self.entry, cluster=cluster, nodes=self.nodes, capabilities=self.capabilities
            )
        )
        fit = threading.Thread(target=self._fit)
        fit.start()
        self._on_all(listing)
        self._on_all(build_hf_cache_check_command(repo=self.entry.repo, cluster=cluster))
        fit.join()
        self._on_all(MEMINFO_COMMAND)
        checked = time.time()
        self.head.run(build_stop_command(cluster=cluster, nodes=self.nodes, capabilities=self.capabilities))
        self._on_all(listing)
        stopped = time.time()
        self._on_all(CLOCK_COMMAND)  # each node's clock, read for the log's --since
        self.head.run(self.launch.command)
        launched = time.time()
        while True:
            try:
                with socket.create_connection(("127.0.0.1", harness.sim.vllm_port), timeout=0.5):
                    pass
                if self.entry.effective_served_name in self.client.get(url).text:
                    break
            except (OSError, httpx.HTTPError):
                time.sleep(0.001)
        ready = time.time()
        engine = _engine_start(harness, started, deadline=ready + 5)
        opened = _records(harness, prog="vllm", event="port_open", since=started, node=harness.sim.head.name)
        load = opened[0]["t"] - engine
        steps = {"checks": checked - started, "stop": stopped - checked, "launch": launched - stopped}
        steps["engine start -> listening"] = load
        return ((ready - started) - load) * 1000, {name: value * 1000 for name, value in steps.items()}

    def close(self) -> None:
        self.client.close()


def run_ssh_baselines(harness: Harness, *, warm: int, cold: int) -> dict[str, Any]:
    """paramiko out of the box vs Spark Control's SSH layer (TCP_NODELAY, pinned key): command -> first line."""
    from cluster.models import SparkHost
    from cluster.ssh import SparkConnection

    command = _help_command(harness)
    host = SparkHost.objects.get(name=harness.sim.head.name)
    out: dict[str, list[float]] = {"default_warm": [], "default_cold": [], "nodelay_warm": [], "nodelay_cold": []}
    client = _paramiko_default(harness)
    ours = SparkConnection(host)
    try:
        for _ in range(warm):
            started = time.time()
            _paramiko_exec(client, command)
            out["default_warm"].append((_first_line_after(harness, started) - started) * 1000)
            started = time.time()
            ours.run(command)
            out["nodelay_warm"].append((_first_line_after(harness, started) - started) * 1000)
    finally:
        client.close()
        ours.client.close()
    for _ in range(cold):
        started = time.time()
        fresh = _paramiko_default(harness)
        try:
            _paramiko_exec(fresh, command)
        finally:
            fresh.close()
        out["default_cold"].append((_first_line_after(harness, started) - started) * 1000)
        started = time.time()
        connection = SparkConnection(host)
        try:
            connection.run(command)
        finally:
            connection.client.close()
        out["nodelay_cold"].append((_first_line_after(harness, started) - started) * 1000)
    return {name: summary(values) for name, values in out.items()}
