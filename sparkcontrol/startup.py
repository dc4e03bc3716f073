"""What the serving process does once at start, after migrations, and the light housekeeping loop it runs."""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

logger = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 5.0


def on_serve_start() -> threading.Event:
    """Reload the service list, start the periodic probe sweeps, reap swaps orphaned by a dead worker, and start
    periodic housekeeping.

    Returns an Event that stops the housekeeping thread when set.
    """
    from cluster.services import ServicesConfigError, services_sync

    try:
        services_sync()
    except ServicesConfigError as exc:
        for error in exc.errors:
            logger.error("services configuration refused, keeping the previous one: %s", error)
    from cluster.schedule import probes_schedule_start

    probes_schedule_start()
    _housekeeping_once()
    stop = threading.Event()
    threading.Thread(target=_housekeeping_loop, args=(stop,), name="housekeeping", daemon=True).start()
    return stop


def _housekeeping_once() -> None:
    from cluster.schedule import probes_schedule_revive
    from swaps.services import swaps_reap_stale

    try:
        for swap in swaps_reap_stale():
            logger.warning("swap %s (%s) was interrupted: %s", swap.id, swap.model_key, swap.error)
        probes_schedule_revive()
    except Exception:  # noqa: BLE001 - housekeeping must never stop the server
        logger.exception("housekeeping failed")
    finally:
        close_old_connections()


def _housekeeping_loop(stop: threading.Event) -> None:
    while not stop.wait(HOUSEKEEPING_SECONDS):
        _housekeeping_once()
