"""What a load sample reads, and the parsers of what it reads: vLLM's `/metrics`, one SSH command per Spark, and
the gateway's counters in this process.

No database access here: the sampler reads the topology before and writes the samples after. Nothing raises; a
source that does not answer in time gives no figures for this sample.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from cluster.models import SparkHost
from cluster.probe_http import ProbeHttpClient
from cluster.probes import ProbeClients

# One command per Spark and sample, without a login shell (see cluster/ssh.py). On the GB10 (unified memory)
# nvidia-smi answers "[N/A]" to memory queries, so used memory is MemTotal - MemAvailable from /proc/meminfo.
NODE_COMMAND = (
    "nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null; echo @@meminfo; "
    "grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; echo @@loadavg; cat /proc/loadavg"
)

GAUGES_SUMMED = {
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
}
# Renamed between vLLM generations (v0: gpu_cache_usage_perc; v1: kv_cache_usage_perc); a fraction, 1 = full.
KV_CACHE_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
COUNTERS = {"vllm:prompt_tokens_total": "prompt_tokens", "vllm:generation_tokens_total": "generation_tokens"}


@dataclass(frozen=True)
class EngineLoad:
    """One vLLM's `/metrics`: gauges summed over its engines, cumulative token counters, KV cache use (percent)."""

    requests_running: float | None = None
    requests_waiting: float | None = None
    kv_cache_usage_percent: float | None = None
    prompt_tokens: float | None = None
    generation_tokens: float | None = None


@dataclass(frozen=True)
class NodeLoad:
    """One Spark's reading: GPU utilisation (percent, averaged over its GPUs), memory in bytes, 1-minute load."""

    gpu_busy_percent: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    load_1m: float | None = None


@dataclass(frozen=True)
class GatewayLoad:
    """The gateway's counters and gauges in this process (cumulative requests, 429s; requests held, in flight)."""

    process: str
    requests: float
    rejected: float
    held: float
    in_flight: float


@dataclass
class Readings:
    """Everything one sample read, keyed by vLLM service key and by Spark name."""

    engines: dict[str, EngineLoad] = field(default_factory=dict)
    nodes: dict[str, NodeLoad] = field(default_factory=dict)
    gateway: GatewayLoad | None = None


def _number(value: float) -> float | None:
    return value if value == value and value not in (float("inf"), float("-inf")) else None  # NaN and infinities


WANTED = frozenset((*GAUGES_SUMMED, *KV_CACHE_GAUGES, *COUNTERS))


def _wanted_lines(text: str) -> str:
    """Only the samples (and their TYPE lines) of the figures read: vLLM's page is mostly histogram buckets, and
    prometheus-client's parser is pure Python."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE" and (parts[2] in WANTED or f"{parts[2]}_total" in WANTED):
                kept.append(line)
        elif line.split("{", 1)[0].split(" ", 1)[0] in WANTED:
            kept.append(line)
    return "\n".join(kept) + "\n"


def parse_engine_metrics(text: str) -> EngineLoad | None:
    """The load figures of a vLLM `/metrics` page (Prometheus text format); None when it holds none of them."""
    sums: dict[str, float] = {}
    cache: list[float] = []
    try:
        families = list(text_string_to_metric_families(_wanted_lines(text)))
    except (ValueError, TypeError, IndexError):
        return None
    for family in families:
        for sample in family.samples:
            value = _number(float(sample.value))
            if value is None:
                continue
            if sample.name in GAUGES_SUMMED:
                key = GAUGES_SUMMED[sample.name]
            elif sample.name in COUNTERS:
                key = COUNTERS[sample.name]
            elif sample.name in KV_CACHE_GAUGES:
                cache.append(value)
                continue
            else:
                continue
            sums[key] = sums.get(key, 0.0) + value
    if not sums and not cache:
        return None
    return EngineLoad(
        requests_running=sums.get("requests_running"),
        requests_waiting=sums.get("requests_waiting"),
        kv_cache_usage_percent=round(100.0 * sum(cache) / len(cache), 3) if cache else None,
        prompt_tokens=sums.get("prompt_tokens"),
        generation_tokens=sums.get("generation_tokens"),
    )


def _sections(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {"gpu": []}
    current = "gpu"
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("@@"):
            current = line[2:]
            sections[current] = []
        elif line:
            sections.setdefault(current, []).append(line)
    return sections


def _gpu_percent(lines: Iterable[str]) -> float | None:
    """The mean of nvidia-smi's per-GPU utilisation lines ("17", or "[N/A]" / "[Not Supported]" when unknown)."""
    values = []
    for line in lines:
        try:
            values.append(float(line.split(",")[0].strip().rstrip("%").strip()))
        except ValueError:
            continue
    values = [v for v in values if 0.0 <= v <= 100.0]
    return round(sum(values) / len(values), 2) if values else None


def _meminfo_bytes(lines: Iterable[str]) -> tuple[float | None, float | None]:
    figures: dict[str, float] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            amount = float(parts[0])
        except ValueError:
            continue
        unit = parts[1].lower() if len(parts) > 1 else ""
        figures[name.strip()] = amount * 1024 if unit == "kb" else amount
    total, available = figures.get("MemTotal"), figures.get("MemAvailable")
    if total is None or available is None:
        return None, total
    return max(0.0, total - available), total


def _load_1m(lines: list[str]) -> float | None:
    try:
        return float(lines[0].split()[0])
    except (IndexError, ValueError):
        return None


def parse_node_output(output: str) -> NodeLoad:
    """The figures in the output of `NODE_COMMAND` (any part missing or garbled is left unknown)."""
    sections = _sections(output)
    used, total = _meminfo_bytes(sections.get("meminfo", []))
    return NodeLoad(
        gpu_busy_percent=_gpu_percent(sections.get("gpu", [])),
        memory_used_bytes=used,
        memory_total_bytes=total,
        load_1m=_load_1m(sections.get("loadavg", [])),
    )


def gateway_read() -> GatewayLoad:
    """The gateway's metrics as this process counted them (prometheus-client's default registry; each serving
    process has its own)."""
    requests = rejected = held = in_flight = 0.0
    for family in REGISTRY.collect():
        if not family.name.startswith("sparkcontrol_gateway_"):
            continue
        for sample in family.samples:
            if sample.name == "sparkcontrol_gateway_requests_total":
                requests += sample.value
                if sample.labels.get("status") == "429":
                    rejected += sample.value
            elif sample.name == "sparkcontrol_gateway_held":
                held += sample.value
            elif sample.name == "sparkcontrol_gateway_in_flight":
                in_flight += sample.value
    process = f"{socket.gethostname()}:{os.getpid()}"
    return GatewayLoad(process=process, requests=requests, rejected=rejected, held=held, in_flight=in_flight)


@dataclass(frozen=True)
class EngineTarget:
    """A vLLM to read: its service key and base URL."""

    key: str
    base_url: str


async def _engine(client: ProbeHttpClient, target: EngineTarget) -> EngineLoad | None:
    try:
        response = await client.get(f"{target.base_url}/metrics")
        if response.status_code != 200:
            return None
        return parse_engine_metrics(response.text)
    except (OSError, UnicodeDecodeError):  # ProbeHttpError and timeouts are OSErrors
        return None


def _node(host: SparkHost, timeout: float) -> NodeLoad | None:
    from cluster.ssh import SshError, spark_connect

    try:
        result = spark_connect(host).run(NODE_COMMAND, timeout=timeout)
    except SshError:
        return None
    return parse_node_output(result.stdout)


async def _gather(engines: list[EngineTarget], hosts: list[SparkHost], *, timeout: float) -> Readings:
    loop = asyncio.get_running_loop()
    # paramiko blocks: each Spark gets a thread. The pool is not waited for, so a command stuck past the deadline
    # (it ends on its own timeout, the same value) cannot hold the sample.
    executor = ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="load-ssh")
    readings = Readings()
    try:
        node_futures = [loop.run_in_executor(executor, _node, host, timeout) for host in hosts]
        async with ProbeClients(timeout=timeout) as clients:
            engine_tasks = [asyncio.ensure_future(_engine(clients.for_url(t.base_url), t)) for t in engines]
            pending = [*engine_tasks, *node_futures]
            # One deadline for everything (per-phase timeouts: a slow-drip server would outlast them).
            done = (await asyncio.wait(pending, timeout=timeout))[0] if pending else set()
            for task in engine_tasks:
                if task not in done:
                    task.cancel()
        for target, task in zip(engines, engine_tasks, strict=True):
            if task in done and task.result() is not None:
                readings.engines[target.key] = task.result()
        for host, future in zip(hosts, node_futures, strict=True):
            if future in done and future.result() is not None:
                readings.nodes[host.name] = future.result()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return readings


def load_read(*, engines: list[EngineTarget], hosts: list[SparkHost], timeout: float) -> Readings:
    """Read every vLLM's `/metrics` and every Spark (one SSH command each) at once, within `timeout` seconds, and
    the gateway's counters of this process. Call from synchronous code (a task)."""
    readings = asyncio.run(_gather(engines, hosts, timeout=timeout))
    readings.gateway = gateway_read()
    return readings
