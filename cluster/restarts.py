"""Restarts of a service's container on its Spark: the request (checks, the row, the audit line) and the task body.

A restart is `docker restart --time N <container>` over SSH on the service's node, what an operator would type:
docker sends SIGTERM, waits up to N seconds, kills, and starts the same container again with the same
configuration. The restart is confirmed by the service's own probe: the row reaches `up` only when the probe
passes again (bounded by SERVICE_RESTART_WAIT_SECONDS), else `failed`. Every state change is pushed to dashboards
after its commit.

Which services are the GPU's (a restart waits while the swap lock is held): every vLLM (it holds the GPU's
memory) and any service marked `gpu: true` in services-overrides.yaml. The head vLLM is never restarted here:
it changes only by a swap. The lock itself belongs to a higher layer; SERVICE_RESTART_LOCK_CHECK names the
function (wired in settings) that says why a GPU change must wait, or None.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from audit.services import audit_record
from cluster.models import RESTART_ACTIVE_STATES, ProbeStatus, RestartState, Service, ServiceRestart, SparkHost
from cluster.probes import ProbeClients, ProbeOutcome, ProbeTarget, probe_service
from cluster.selectors import restart_out, service_base_url, service_host, service_restart_refusal
from cluster.services import cluster_settings_get
from realtime.broadcast import broadcast_on_commit

logger = logging.getLogger(__name__)

# Between two probes while waiting for the service to come back.
PROBE_INTERVAL_S = 1.0
# An active restart older than its longest possible run plus this margin was interrupted (its worker died).
STALE_MARGIN = timedelta(minutes=10)


class RestartRefused(Exception):
    """A restart that cannot start; `status` is the HTTP status the API answers (404, 409, 423)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _broadcast(restart: ServiceRestart) -> None:
    broadcast_on_commit({"kind": "service_restart", "restart": restart_out(restart)})


def _max_run() -> timedelta:
    return timedelta(seconds=settings.SERVICE_RESTART_WAIT_SECONDS + settings.SERVICE_RESTART_STOP_SECONDS) + (
        STALE_MARGIN
    )


def _fail_stale(*, service: Service, now: datetime) -> None:
    """Mark active restarts of this service that outlived any possible run as failed (their worker died)."""
    for stale in ServiceRestart.objects.filter(
        service=service, state__in=RESTART_ACTIVE_STATES, requested_at__lt=now - _max_run()
    ):
        stale.state = RestartState.FAILED
        stale.finished_at = now
        stale.error = "interrupted: no worker finished it"
        stale.save(update_fields=["state", "finished_at", "error"])
        _broadcast(stale)


def service_restart_request(*, key: str, requested_by: str) -> ServiceRestart:
    """Queue a restart of the service's container; raises RestartRefused (404, 409, 423) when it cannot start."""
    with transaction.atomic():
        # The service row locked: two requests for one service are decided one after the other.
        service = Service.objects.select_for_update().filter(key=key).first()
        if service is None:
            raise RestartRefused(404, f"no service with key {key!r}")
        refusal = service_restart_refusal(service=service)
        if refusal:
            raise RestartRefused(409, refusal)
        host = service_host(service=service)
        assert host is not None  # service_restart_refusal checked it
        check_path = settings.SERVICE_RESTART_LOCK_CHECK
        if service.on_gpu and check_path:
            locked = import_string(check_path)()
            if locked:
                raise RestartRefused(423, f"{service.key!r} uses the GPU and {locked}; restart it after the lock ends")
        now = timezone.now()
        _fail_stale(service=service, now=now)
        active = ServiceRestart.objects.filter(service=service, state__in=RESTART_ACTIVE_STATES).first()
        if active is not None:
            raise RestartRefused(
                409, f"{service.key!r} is already being restarted (restart {active.pk}, {active.state})"
            )
        restart = ServiceRestart(
            service=service,
            container=service.container,
            host=host.name,
            requested_by=requested_by[:150],
            requested_at=now,
        )
        restart.full_clean()
        restart.save()
        audit_record(
            actor=requested_by,
            action="service.restart",
            target=service.key,
            detail={"restart": restart.pk, "container": restart.container, "host": restart.host},
        )
        _broadcast(restart)
        from cluster.tasks import service_restart

        transaction.on_commit(partial(service_restart.enqueue, restart.pk))
    return restart


def _advance(restart: ServiceRestart, state: str, **fields: Any) -> None:
    restart.state = state
    for name, value in fields.items():
        setattr(restart, name, value)
    with transaction.atomic():
        restart.save(update_fields=["state", *fields])
        _broadcast(restart)


def _fail(restart: ServiceRestart, error: str) -> str:
    _advance(restart, RestartState.FAILED, finished_at=timezone.now(), error=" ".join(error.split())[:500])
    return RestartState.FAILED.value


def _probe_target(service: Service) -> ProbeTarget:
    cluster = cluster_settings_get()
    return ProbeTarget(
        key=service.key,
        kind=service.kind,
        base_url=service_base_url(service=service, cluster=cluster),
        health_path=service.health_path,
        expected_status=service.expected_status,
        models=tuple(str(name) for name in service.models_served or ()),
    )


async def _probe_until_up(target: ProbeTarget, *, timeout: float, wait_s: float) -> tuple[ProbeOutcome, int]:
    """Probe every PROBE_INTERVAL_S until the service is up or `wait_s` has passed; (last outcome, probes sent)."""
    deadline = time.monotonic() + wait_s
    count = 0
    async with ProbeClients(timeout=timeout) as clients:
        while True:
            outcome = await probe_service(clients.for_url(target.base_url), target, timeout=timeout)
            count += 1
            left = deadline - time.monotonic()
            if outcome.status == ProbeStatus.UP or left <= 0:
                return outcome, count
            await asyncio.sleep(min(PROBE_INTERVAL_S, left))


def service_restart_run(*, restart_id: int) -> str:
    """The task body: `docker restart` on the service's Spark, then wait for its probe to pass. Returns the state."""
    from cluster.sweeps import sweep_status

    restart = ServiceRestart.objects.select_related("service").filter(pk=restart_id).first()
    if restart is None:
        return "gone"
    if restart.state != RestartState.QUEUED:
        return restart.state  # a retried task never runs a restart twice
    host = SparkHost.objects.filter(name=restart.host, enabled=True).first()
    if host is None:
        return _fail(restart, f"Spark {restart.host!r} is no longer an enabled host")
    _advance(restart, RestartState.STOPPING, stopping_at=timezone.now())
    try:
        state = _restart_and_confirm(restart, host)
    except Exception as exc:
        # The row must not stay active: the next request for this service would be refused until it went stale.
        _fail(restart, f"internal error: {type(exc).__name__}: {exc}")
        raise
    try:
        # The tile's probe status follows at once instead of at the next periodic sweep.
        sweep_status(keys=[restart.service.key])
    except Exception:  # noqa: BLE001 - the restart is done either way; the periodic sweep catches up
        logger.exception("the status sweep after restart %s failed", restart.pk)
    return state


def _restart_and_confirm(restart: ServiceRestart, host: SparkHost) -> str:
    from cluster.ssh import SshError, spark_connect

    service = restart.service
    stop_s = settings.SERVICE_RESTART_STOP_SECONDS
    wait_s = settings.SERVICE_RESTART_WAIT_SECONDS
    command = f"docker restart --time {int(stop_s)} {shlex.quote(restart.container)}"
    try:
        result = spark_connect(host).run(command, timeout=stop_s + 120)
    except SshError as exc:
        return _fail(restart, str(exc))
    if not result.ok:
        reason = result.stderr.strip() or result.stdout.strip() or "no output"
        return _fail(restart, f"docker restart exited {result.exit_code}: {reason}")
    _advance(restart, RestartState.STARTING, started_at=timezone.now())
    timeout = cluster_settings_get().probe_timeout_s
    outcome, _count = asyncio.run(_probe_until_up(_probe_target(service), timeout=timeout, wait_s=wait_s))
    if outcome.status != ProbeStatus.UP:
        return _fail(restart, f"not up within {wait_s:g} s of the start: {outcome.detail}")
    finished = timezone.now()
    assert restart.stopping_at is not None
    downtime = round((finished - restart.stopping_at).total_seconds(), 1)
    _advance(restart, RestartState.UP, finished_at=finished, downtime_s=downtime)
    return RestartState.UP.value
