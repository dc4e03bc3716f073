"""Background tasks of the cluster app: periodic probe sweeps (see cluster/schedule.py) and on-demand sweeps."""

from __future__ import annotations

from django_tasks import task

from cluster.restarts import service_restart_run
from cluster.schedule import sweep_tick
from cluster.sweeps import sweep_run


@task()
def probe_sweep_tick(sweep: str, due: str | None = None) -> str:
    """One periodic tick of a sweep kind: claims the period, queues the next tick, sweeps."""
    return sweep_tick(sweep=sweep, due=due)


@task()
def probe_sweep(sweep: str, keys: list[str] | None = None) -> dict[str, int]:
    """An on-demand sweep (e.g. a deep health check asked for from the dashboard); returns counts by status."""
    return sweep_run(sweep=sweep, keys=keys).counts()


@task(queue_name="services")
def service_restart(restart_id: int) -> str:
    """Restart a service's container and wait for its probe (minutes at most): its own queue, so neither the
    probe sweeps nor a swap waits behind it."""
    return service_restart_run(restart_id=restart_id)
