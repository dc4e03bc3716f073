"""Logging filters named in `settings.LOGGING` (importable before the apps are loaded: no models here)."""

from __future__ import annotations

import logging

# Tasks that run every few seconds on their own (the periodic probe sweeps): their start and success are routine.
ROUTINE_TASKS = frozenset({"cluster.tasks.probe_sweep_tick", "cluster.tasks.probe_sweep"})


class RoutineTasksAtDebug(logging.Filter):
    """django-tasks logs every task's start and end at INFO; for the routine ones these lines become DEBUG (shown
    only when that logger is set to DEBUG). A routine task that fails keeps its ERROR line."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.levelno != logging.INFO or len(args) < 2 or str(args[1]) not in ROUTINE_TASKS:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True
