"""What the serving process does once at start, after migrations: hooks each app registers here."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def on_serve_start() -> None:
    """Reload the service list from the files (keeping the last good set on error)."""
    from cluster.services import ServicesConfigError, services_sync

    try:
        services_sync()
    except ServicesConfigError as exc:
        for error in exc.errors:
            logger.error("services configuration refused, keeping the previous one: %s", error)
