"""Sweeps: probe every enabled service (and Spark) at once, record the results, push them to dashboards.

A sweep has three phases: read the database (services, hosts, settings) into plain values; probe everything
concurrently in one event loop (HTTP sweeps on the process's probe loop, whose kept connections per origin
outlive the sweep), each probe under an overall deadline, so a sweep of N services takes about one timeout, not
N; then write the results in one transaction and push one message after it commits. Disabled services (admin
flag or the cluster's disabled list) are left out before any I/O. Call sweeps from synchronous code (a task, a
command); from async code use `sync_to_async`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, models, router, transaction
from django.db.models import F, Window
from django.db.models.constants import OnConflict
from django.db.models.functions import RowNumber
from django.utils import timezone

from cluster.models import (
    ClusterSettings,
    EngineSample,
    HostStatus,
    ProbeResult,
    ProbeStatus,
    Service,
    ServiceKind,
    ServiceSample,
    ServiceStatus,
    SparkHost,
    SweepKind,
)
from cluster.probe_http import run_on_probe_loop
from cluster.probes import (
    EngineMetrics,
    ProbeClients,
    ProbeOutcome,
    ProbeTarget,
    probe_service,
    probe_ssh,
    probe_tcp,
    probe_vllm_metrics,
    sweep_deadline,
    tcp_address,
)
from cluster.selectors import probe_summary, service_base_url, service_is_disabled
from cluster.services import cluster_settings_get
from realtime.broadcast import broadcast_on_commit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepEntry:
    """One probed target of a sweep: a service (by key) or a Spark (by name)."""

    target: str
    name: str
    outcome: ProbeOutcome


@dataclass
class SweepReport:
    """What a sweep found, in service-key order, then hosts."""

    sweep: str
    checked_at: datetime
    duration_s: float
    entries: list[SweepEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def down(self) -> list[SweepEntry]:
        return [entry for entry in self.entries if entry.outcome.status == ProbeStatus.DOWN]

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for entry in self.entries:
            totals[entry.outcome.status] = totals.get(entry.outcome.status, 0) + 1
        return totals


@dataclass(frozen=True)
class _Plan:
    cluster: ClusterSettings
    services: list[Service]
    targets: list[ProbeTarget]
    skipped: list[str]
    hosts: list[SparkHost]


def _plan(*, keys: Collection[str] | None, with_hosts: bool) -> _Plan:
    cluster = cluster_settings_get()
    hosts = list(SparkHost.objects.order_by("name"))
    services, skipped = [], []
    for service in Service.objects.order_by("key"):
        if keys is not None and service.key not in keys:
            continue
        if service_is_disabled(service=service, cluster=cluster):
            skipped.append(service.key)
        else:
            services.append(service)
    targets = [
        ProbeTarget(
            key=service.key,
            kind=service.kind,
            base_url=service_base_url(service=service, cluster=cluster, hosts=hosts),
            health_path=service.health_path,
            expected_status=service.expected_status,
            models=tuple(str(name) for name in service.models_served or ()),
        )
        for service in services
    ]
    ssh_hosts = [host for host in hosts if host.enabled] if with_hosts else []
    return _Plan(cluster=cluster, services=services, targets=targets, skipped=skipped, hosts=ssh_hosts)


# --- the network phase (no database access below until _record) ---------------------------------------------------


async def _probe_http_targets(
    targets: list[ProbeTarget], *, timeout: float, deep: bool
) -> tuple[list[ProbeOutcome], dict[str, EngineMetrics]]:
    engines = [target for target in targets if target.kind == ServiceKind.VLLM] if not deep else []
    async with ProbeClients(timeout=timeout) as clients:
        with sweep_deadline(timeout):
            outcomes, samples = await asyncio.gather(
                asyncio.gather(
                    *(probe_service(clients.for_url(t.base_url), t, timeout=timeout, deep=deep) for t in targets)
                ),
                asyncio.gather(
                    *(probe_vllm_metrics(clients.for_url(t.base_url), t.base_url, timeout=timeout) for t in engines)
                ),
            )
    metrics = {target.key: sample for target, sample in zip(engines, samples, strict=True) if sample is not None}
    return list(outcomes), metrics


async def _probe_connectivity(
    targets: list[ProbeTarget], hosts: list[SparkHost], *, timeout: float
) -> tuple[list[ProbeOutcome], list[ProbeOutcome]]:
    async def tcp(target: ProbeTarget) -> ProbeOutcome:
        address = tcp_address(target.base_url)
        if address is None:
            return ProbeOutcome(ProbeStatus.UNKNOWN.value, None, "no host in the service URL")
        return await probe_tcp(address[0], address[1], timeout=timeout)

    # paramiko blocks: each host gets a thread. The pool is not waited for on exit, so a thread stuck past the
    # deadline (it ends on paramiko's own timeouts) cannot hold the sweep.
    executor = ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="probe-ssh")
    try:
        with sweep_deadline(timeout):
            results = await asyncio.gather(
                *(tcp(target) for target in targets),
                *(probe_ssh(host, timeout=timeout, executor=executor) for host in hosts),
            )
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return list(results[: len(targets)]), list(results[len(targets) :])


# --- liveness beyond /health ----------------------------------------------------------------------------------------


def engine_stalled_since(*, previous: EngineSample | None, metrics: EngineMetrics, now: datetime) -> datetime | None:
    """Since when requests have been running with the generated-token counter frozen; None when not stalled.

    The clock starts at the first sample that saw requests running at the current token count, so an engine that
    sat idle for an hour and just took a request is not called wedged; a counter that went down (a restart)
    counts as movement.
    """
    if previous is None or metrics.requests_running <= 0 or metrics.generation_tokens != previous.generation_tokens:
        return None
    if previous.stalled_since is not None:
        return previous.stalled_since
    return previous.sampled_at if previous.requests_running > 0 else now


def _apply_engine_samples(
    *,
    services: dict[str, Service],
    outcomes: dict[str, ProbeOutcome],
    metrics: dict[str, EngineMetrics],
    now: datetime,
    wedged_after_s: float,
) -> None:
    """Store this sweep's /metrics samples and turn an `up` vLLM whose engine is wedged into `degraded`."""
    if not metrics:
        return
    ids = [services[key].pk for key in metrics]
    previous = {sample.service_id: sample for sample in EngineSample.objects.filter(service_id__in=ids)}
    rows = []
    for key, sample in metrics.items():
        service = services[key]
        stalled_since = engine_stalled_since(previous=previous.get(service.pk), metrics=sample, now=now)
        rows.append(
            EngineSample(
                service=service,
                requests_running=sample.requests_running,
                generation_tokens=sample.generation_tokens,
                sampled_at=now,
                stalled_since=stalled_since,
            )
        )
        outcome = outcomes[key]
        if stalled_since is None or outcome.status != ProbeStatus.UP:
            continue
        frozen_s = (now - stalled_since).total_seconds()
        if frozen_s >= wedged_after_s:
            outcomes[key] = ProbeOutcome(
                ProbeStatus.DEGRADED.value,
                outcome.latency_ms,
                f"engine wedged: {sample.requests_running:g} request(s) running, no token generated for "
                f"{frozen_s:.0f} s",
            )
    EngineSample.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["service"],
        update_fields=["requests_running", "generation_tokens", "sampled_at", "stalled_since"],
    )


# --- recording ------------------------------------------------------------------------------------------------------


def _prune(*, sweep: str, column: str, ids: list[int], keep: int) -> None:
    """Keep the newest `keep` results per target of this sweep kind (one ranked read, one delete)."""
    if not ids:
        return
    ranked = ProbeResult.objects.filter(sweep=sweep, **{f"{column}__in": ids}).annotate(
        rank=Window(RowNumber(), partition_by=[F(column)], order_by=[F("checked_at").desc(), F("id").desc()])
    )
    stale = list(ranked.filter(rank__gt=keep).values_list("pk", flat=True))
    if stale:
        ProbeResult.objects.filter(pk__in=stale).delete()


def _insert(
    model: type[models.Model],
    fields: list[str],
    rows: list[tuple[Any, ...]],
    *,
    unique: list[str] | None = None,
    update: list[str] | None = None,
) -> None:
    """Insert plain value rows with multi-row INSERTs (upserts when `unique` is given), as `bulk_create` batches them.

    A sweep of 500 services writes 1,500 rows; through `bulk_create` each was a model instance whose every field
    was prepared one by one (and a garbage collection every few hundred objects), several times the cost of the
    SQL. The values here are already what the columns hold (the one datetime prepared by the caller, with
    `_prepared`); the batch size and the conflict clause are the database backend's own, as
    `bulk_create(update_conflicts=True)` uses them.
    """
    if not rows:
        return
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    meta = model._meta
    model_fields = [meta.get_field(name) for name in fields]
    head = "INSERT INTO {} ({}) VALUES ".format(
        quote(meta.db_table), ", ".join(quote(field.column) for field in model_fields)
    )
    suffix = ""
    if unique is not None:
        suffix = " " + connection.ops.on_conflict_suffix_sql(
            model_fields,
            OnConflict.UPDATE,
            [meta.get_field(name).column for name in update or ()],
            [meta.get_field(name).column for name in unique],
        )
    one = "({})".format(", ".join(["%s"] * len(fields)))
    size = max(1, connection.ops.bulk_batch_size(model_fields, rows))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            cursor.execute(head + ", ".join([one] * len(batch)) + suffix, [value for row in batch for value in row])


def _prepared(model: type[models.Model], field: str, value: Any) -> Any:
    """`value` as the model's column holds it on the database it is written to (a datetime: text on SQLite)."""
    connection = connections[router.db_for_write(model)]
    return model._meta.get_field(field).get_db_prep_save(value, connection)


def _record_samples(*, checked_at: datetime, services: list[tuple[Service, ProbeOutcome]]) -> None:
    """The service pages' day of history: one bulk insert, then one indexed range delete of what aged out."""
    at = _prepared(ServiceSample, "checked_at", checked_at)
    _insert(
        ServiceSample,
        ["service", "status", "latency_ms", "detail", "checked_at"],
        [
            (service.pk, o.status, o.latency_ms, "" if o.status == ProbeStatus.UP else o.detail, at)
            for service, o in services
        ],
    )
    ServiceSample.objects.filter(checked_at__lt=checked_at - timedelta(hours=settings.SERVICE_HISTORY_HOURS)).delete()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True, slots=True)
class _Latest:
    """This sweep's result for one service, shaped like the `ServiceStatus` row just written from it."""

    sweep: str
    status: str
    latency_ms: float | None
    detail: str
    checked_at: datetime


def _message(
    *,
    sweep: str,
    checked_at: datetime,
    services: list[tuple[Service, ProbeOutcome]],
    hosts: list[tuple[SparkHost, Any]],
) -> dict:
    # Only the other sweep kinds' latest rows are read back: this sweep's are the outcomes in hand.
    statuses: dict[int, list[ServiceStatus | _Latest]] = {}
    for row in ServiceStatus.objects.filter(service_id__in=[service.pk for service, _ in services]).exclude(
        sweep=sweep
    ):
        statuses.setdefault(row.service_id, []).append(row)
    service_items = []
    for service, o in services:
        rows = statuses.get(service.pk, [])
        rows.append(_Latest(sweep, o.status, o.latency_ms, o.detail, checked_at))
        summary = probe_summary(statuses=rows)
        summary["checked_at"] = _iso(summary["checked_at"])
        service_items.append({"key": service.key, "probe": summary})
    host_items = [
        {"name": host.name, "status": o.status, "latency_ms": o.latency_ms, "detail": o.detail} for host, o in hosts
    ]
    return {
        "kind": "probe",
        "sweep": sweep,
        "checked_at": checked_at.isoformat(),
        "services": service_items,
        "hosts": host_items,
    }


_OUTCOME_FIELDS = ["status", "latency_ms", "detail", "checked_at"]


def _outcome_fields(outcome: ProbeOutcome, checked_at: datetime) -> dict[str, Any]:
    """The columns an outcome fills in every row that records it (history and latest)."""
    return {
        "status": outcome.status,
        "latency_ms": outcome.latency_ms,
        "detail": outcome.detail,
        "checked_at": checked_at,
    }


def _record(
    *,
    sweep: str,
    checked_at: datetime,
    services: list[tuple[Service, ProbeOutcome]],
    hosts: list[tuple[SparkHost, ProbeOutcome]],
    keep: int,
) -> None:
    at = _prepared(ProbeResult, "checked_at", checked_at)
    _insert(
        ProbeResult,
        ["service", "host", "sweep", *_OUTCOME_FIELDS],
        [(service.pk, None, sweep, o.status, o.latency_ms, o.detail, at) for service, o in services]
        + [(None, host.pk, sweep, o.status, o.latency_ms, o.detail, at) for host, o in hosts],
    )
    _insert(
        ServiceStatus,
        ["service", "sweep", *_OUTCOME_FIELDS],
        [(service.pk, sweep, o.status, o.latency_ms, o.detail, at) for service, o in services],
        unique=["service", "sweep"],
        update=_OUTCOME_FIELDS,
    )
    if hosts:
        HostStatus.objects.bulk_create(
            [HostStatus(host=host, **_outcome_fields(o, checked_at)) for host, o in hosts],
            update_conflicts=True,
            unique_fields=["host"],
            update_fields=_OUTCOME_FIELDS,
        )
    if sweep == SweepKind.STATUS and services:
        _record_samples(checked_at=checked_at, services=services)
    _prune(sweep=sweep, column="service_id", ids=[service.pk for service, _ in services], keep=keep)
    _prune(sweep=sweep, column="host_id", ids=[host.pk for host, _ in hosts], keep=keep)
    if not services and not hosts:
        return
    broadcast_on_commit(_message(sweep=sweep, checked_at=checked_at, services=services, hosts=hosts))


# --- the sweeps -----------------------------------------------------------------------------------------------------


def _http_sweep(*, sweep: str, deep: bool, timeout: float | None, keys: Collection[str] | None) -> SweepReport:
    plan = _plan(keys=keys, with_hosts=False)
    if timeout is None:
        timeout = plan.cluster.probe_deep_timeout_s if deep else plan.cluster.probe_timeout_s
    started = time.perf_counter()
    outcomes_list, metrics = run_on_probe_loop(_probe_http_targets(plan.targets, timeout=timeout, deep=deep))
    duration = time.perf_counter() - started
    checked_at = timezone.now()
    by_key = {service.key: service for service in plan.services}
    outcomes = {target.key: outcome for target, outcome in zip(plan.targets, outcomes_list, strict=True)}
    with transaction.atomic():
        _apply_engine_samples(
            services=by_key,
            outcomes=outcomes,
            metrics=metrics,
            now=checked_at,
            wedged_after_s=plan.cluster.engine_wedged_after_s,
        )
        _record(
            sweep=sweep,
            checked_at=checked_at,
            services=[(service, outcomes[service.key]) for service in plan.services],
            hosts=[],
            keep=plan.cluster.probe_history,
        )
    entries = [SweepEntry("service", service.key, outcomes[service.key]) for service in plan.services]
    return SweepReport(sweep, checked_at, duration, entries, plan.skipped)


def sweep_status(*, timeout: float | None = None, keys: Collection[str] | None = None) -> SweepReport:
    """The cheap sweep: each enabled service's health (vLLM: `/v1/models` and a `/metrics` sample)."""
    return _http_sweep(sweep=SweepKind.STATUS.value, deep=False, timeout=timeout, keys=keys)


def sweep_deep(*, timeout: float | None = None, keys: Collection[str] | None = None) -> SweepReport:
    """The deep sweep: real work on each enabled service (a one-token completion, an embedding, ...)."""
    return _http_sweep(sweep=SweepKind.DEEP.value, deep=True, timeout=timeout, keys=keys)


def sweep_connectivity(
    *, timeout: float | None = None, keys: Collection[str] | None = None, hosts: bool | None = None
) -> SweepReport:
    """TCP reachability of each enabled service's port, and SSH (pinned key) of each enabled Spark.

    Hosts are checked unless `keys` narrows the sweep to some services (`hosts` overrides).
    """
    plan = _plan(keys=keys, with_hosts=keys is None if hosts is None else hosts)
    timeout = plan.cluster.probe_timeout_s if timeout is None else timeout
    started = time.perf_counter()
    tcp_outcomes, ssh_outcomes = asyncio.run(_probe_connectivity(plan.targets, plan.hosts, timeout=timeout))
    duration = time.perf_counter() - started
    checked_at = timezone.now()
    services = list(zip(plan.services, tcp_outcomes, strict=True))
    hosts_done = list(zip(plan.hosts, ssh_outcomes, strict=True))
    with transaction.atomic():
        _record(
            sweep=SweepKind.CONNECTIVITY.value,
            checked_at=checked_at,
            services=services,
            hosts=hosts_done,
            keep=plan.cluster.probe_history,
        )
    entries = [SweepEntry("service", service.key, outcome) for service, outcome in services]
    entries += [SweepEntry("host", host.name, outcome) for host, outcome in hosts_done]
    return SweepReport(SweepKind.CONNECTIVITY.value, checked_at, duration, entries, plan.skipped)


SWEEPS = {
    SweepKind.STATUS.value: sweep_status,
    SweepKind.DEEP.value: sweep_deep,
    SweepKind.CONNECTIVITY.value: sweep_connectivity,
}


def sweep_run(*, sweep: str, timeout: float | None = None, keys: Collection[str] | None = None) -> SweepReport:
    """Run one sweep by kind (status, deep, connectivity)."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; one of {', '.join(SWEEPS)}")
    return SWEEPS[sweep](timeout=timeout, keys=keys)
