"""Background task of the telemetry app: the periodic load sample (see telemetry/schedule.py)."""

from __future__ import annotations

from django_tasks import task

from telemetry.schedule import load_tick


@task()
def load_sample_tick(due: str | None = None) -> str:
    """One periodic tick: claims the period, queues the next tick, takes a load sample."""
    return load_tick(due=due)
