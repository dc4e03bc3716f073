"""Taking load samples, and keeping their history bounded: a day at full resolution, a month of 5-minute averages.

A sample has three phases, like a probe sweep: read the topology into plain values; read every source at once
under one deadline (`telemetry.collectors`); then write one row per Spark and one for the gateway, with rates from
the counters' previous readings, in one transaction. The sampler prunes its own history as it goes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cluster.models import Role, Service, ServiceKind, SparkHost
from cluster.selectors import service_base_url, service_is_disabled
from cluster.services import cluster_settings_get
from telemetry.collectors import EngineLoad, EngineTarget, Readings, load_read
from telemetry.models import LOAD_SERIES, LoadCounter, LoadResolution, LoadSample

FULL_RESOLUTION_KEPT = timedelta(days=1)
AVERAGES_KEPT = timedelta(days=30)
AVERAGE_BUCKET = timedelta(minutes=5)
# A counter read longer ago than this many periods gives no rate (the sampler was stopped): the next one will.
RATE_MAX_PERIODS = 6
COUNTERS_KEPT = timedelta(days=1)


def load_sample_period() -> float:
    """Seconds between two load samples (SPARKCONTROL_LOAD_SAMPLE_SECONDS)."""
    return float(settings.SPARKCONTROL["LOAD_SAMPLE_SECONDS"])


def load_sampling_enabled() -> bool:
    """Whether the worker takes load samples at all (SPARKCONTROL_LOAD_SAMPLING)."""
    return bool(settings.SPARKCONTROL["LOAD_SAMPLING"])


@dataclass
class LoadSampleReport:
    """What one sample took: when, how long the reads and the whole sample took, and the rows written."""

    at: datetime
    read_s: float
    total_s: float
    cpu_s: float
    nodes: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    averaged: int = 0
    pruned: int = 0


@dataclass(frozen=True)
class _Plan:
    hosts: list[SparkHost]
    engines: list[EngineTarget]
    engine_nodes: dict[str, str]


def _engine_node(service: Service, hosts: list[SparkHost]) -> str:
    """The Spark a vLLM runs on: its node by host name, or the first enabled host of its role."""
    by_name = next((host.name for host in hosts if host.name == service.node), None)
    if by_name is not None:
        return by_name
    if service.node in (Role.HEAD, Role.WORKER):
        by_role = sorted(host.name for host in hosts if host.role == service.node)
        if by_role:
            return by_role[0]
    return service.node or service.key


def _plan() -> _Plan:
    cluster = cluster_settings_get()
    enabled = list(SparkHost.objects.filter(enabled=True).order_by("name"))
    engines, engine_nodes = [], {}
    for service in Service.objects.filter(kind=ServiceKind.VLLM).order_by("key"):
        if service_is_disabled(service=service, cluster=cluster):
            continue
        engines.append(EngineTarget(service.key, service_base_url(service=service, cluster=cluster, hosts=enabled)))
        engine_nodes[service.key] = _engine_node(service, enabled)
    hosts = [host for host in enabled if host.host_key.strip()]  # an unpinned host gets no command at all
    return _Plan(hosts=hosts, engines=engines, engine_nodes=engine_nodes)


class _Rates:
    """Per-second rates of cumulative counters from their previous readings (kept in LoadCounter rows)."""

    def __init__(self, *, now: datetime, max_age: timedelta) -> None:
        self.now = now
        self.max_age = max_age
        self.previous = {row.key: row for row in LoadCounter.objects.all()}
        self.readings: dict[str, float] = {}

    def rate(self, key: str, value: float | None) -> float | None:
        if value is None:
            return None
        self.readings[key] = value
        previous = self.previous.get(key)
        if previous is None:
            return None
        elapsed = (self.now - previous.at).total_seconds()
        # A counter that went down was reset (the engine restarted): no rate until the next reading.
        if elapsed <= 0 or elapsed > self.max_age.total_seconds() or value < previous.value:
            return None
        return round((value - previous.value) / elapsed, 3)

    def save(self) -> None:
        LoadCounter.objects.bulk_create(
            [LoadCounter(key=key, value=value, at=self.now) for key, value in self.readings.items()],
            update_conflicts=True,
            unique_fields=["key"],
            update_fields=["value", "at"],
        )
        LoadCounter.objects.filter(at__lt=self.now - COUNTERS_KEPT).delete()


def _summed(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(sum(present), 3) if present else None


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(sum(present) / len(present), 3) if present else None


def _rows(*, readings: Readings, plan: _Plan, now: datetime, rates: _Rates) -> list[LoadSample]:
    by_node: dict[str, list[tuple[EngineLoad, float | None, float | None]]] = defaultdict(list)
    for key, engine in readings.engines.items():
        prompt = rates.rate(f"vllm:{key}:prompt_tokens", engine.prompt_tokens)
        generation = rates.rate(f"vllm:{key}:generation_tokens", engine.generation_tokens)
        by_node[plan.engine_nodes[key]].append((engine, prompt, generation))
    rows = []
    for node in sorted(set(readings.nodes) | set(by_node)):
        host = readings.nodes.get(node)
        engines = by_node.get(node, [])
        rows.append(
            LoadSample(
                at=now,
                node=node,
                gpu_busy_percent=host.gpu_busy_percent if host else None,
                memory_used_bytes=host.memory_used_bytes if host else None,
                memory_total_bytes=host.memory_total_bytes if host else None,
                load_1m=host.load_1m if host else None,
                requests_running=_summed([engine.requests_running for engine, _, _ in engines]),
                requests_waiting=_summed([engine.requests_waiting for engine, _, _ in engines]),
                kv_cache_usage_percent=_mean([engine.kv_cache_usage_percent for engine, _, _ in engines]),
                prompt_tokens_per_second=_summed([prompt for _, prompt, _ in engines]),
                generation_tokens_per_second=_summed([generation for _, _, generation in engines]),
            )
        )
    gateway = readings.gateway
    if gateway is not None:
        # Counters are per process: a rate is only taken against the same process's previous reading.
        rows.append(
            LoadSample(
                at=now,
                node="",
                gateway_requests_per_second=rates.rate(f"gateway:{gateway.process}:requests", gateway.requests),
                gateway_rejected_per_second=rates.rate(f"gateway:{gateway.process}:rejected", gateway.rejected),
                gateway_held=gateway.held,
                gateway_in_flight=gateway.in_flight,
            )
        )
    return rows


def _bucket_start(at: datetime) -> datetime:
    seconds = int(AVERAGE_BUCKET.total_seconds())
    return datetime.fromtimestamp(int(at.timestamp()) // seconds * seconds, tz=at.tzinfo)


def load_history_compact(*, now: datetime | None = None) -> tuple[int, int]:
    """Fold full-resolution samples older than a day into 5-minute averages and drop averages older than a month.

    Only whole buckets are folded (the cut-off is a bucket boundary), so a bucket is averaged once, from all its
    samples. Returns (averaged rows written, rows deleted).
    """
    now = now or timezone.now()
    cutoff = _bucket_start(now - FULL_RESOLUTION_KEPT)
    old = LoadSample.objects.filter(resolution=LoadResolution.FULL, at__lt=cutoff)
    groups: dict[tuple[datetime, str], list[dict]] = defaultdict(list)
    for row in old.values("at", "node", *LOAD_SERIES):
        groups[(_bucket_start(row["at"]), row["node"])].append(row)
    averages = [
        LoadSample(
            at=bucket,
            node=node,
            resolution=LoadResolution.FIVE_MINUTES,
            **{name: _mean([row[name] for row in rows]) for name in LOAD_SERIES},
        )
        for (bucket, node), rows in sorted(groups.items())
    ]
    with transaction.atomic():
        LoadSample.objects.bulk_create(averages, ignore_conflicts=True)
        deleted, _ = old.delete() if groups else (0, None)
        expired, _ = LoadSample.objects.filter(
            resolution=LoadResolution.FIVE_MINUTES, at__lt=now - AVERAGES_KEPT
        ).delete()
    return len(averages), deleted + expired


def load_sample_take(*, timeout: float | None = None) -> LoadSampleReport:
    """Take one load sample of every Spark, every enabled vLLM and the gateway, store it, compact the history."""
    started, cpu_started = time.perf_counter(), time.process_time()
    period = load_sample_period()
    timeout = timeout if timeout is not None else min(period, cluster_settings_get().probe_timeout_s)
    plan = _plan()
    read_started = time.perf_counter()
    readings = load_read(engines=plan.engines, hosts=plan.hosts, timeout=timeout)
    read_s = time.perf_counter() - read_started
    now = timezone.now()
    with transaction.atomic():
        rates = _Rates(now=now, max_age=timedelta(seconds=period * RATE_MAX_PERIODS))
        rows = _rows(readings=readings, plan=plan, now=now, rates=rates)
        LoadSample.objects.bulk_create(rows, ignore_conflicts=True)
        rates.save()
    averaged, pruned = load_history_compact(now=now)
    return LoadSampleReport(
        at=now,
        read_s=read_s,
        total_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu_started,
        nodes=sorted(readings.nodes),
        engines=sorted(readings.engines),
        averaged=averaged,
        pruned=pruned,
    )
