"""Routine task lines (the periodic probe sweeps) are DEBUG; other tasks' lines and every failure stay visible."""

from __future__ import annotations

import logging

import pytest
from django_tasks import TaskResultStatus
from django_tasks.signals import task_finished, task_started

from cluster.tasks import probe_sweep_tick
from coordination.tasks import webhook_deliver


def _emit(task, status) -> None:  # type: ignore[no-untyped-def]
    fake = type("Result", (), {"id": "x", "task": task, "status": status})()
    task_started.send(sender=type(task.get_backend()), task_result=fake)
    task_finished.send(sender=type(task.get_backend()), task_result=fake)


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_probe_ticks_log_at_debug_and_other_tasks_at_info(caplog, level):
    caplog.set_level(level, logger="django_tasks")
    _emit(probe_sweep_tick, TaskResultStatus.SUCCESSFUL)
    _emit(webhook_deliver, TaskResultStatus.SUCCESSFUL)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "django_tasks"]
    routine = [name for name, message in lines if "probe_sweep_tick" in message]
    other = [name for name, message in lines if "webhook_deliver" in message]
    assert other == ["INFO", "INFO"]
    assert routine == ([] if level == logging.INFO else ["DEBUG", "DEBUG"])
