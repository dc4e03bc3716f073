"""Keep the service list and settings row present after migrations, so a fresh install has its tiles."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def sync_after_migrate(**kwargs: Any) -> None:
    from cluster.services import ServicesConfigError, cluster_settings_get, services_sync

    cluster_settings_get()
    try:
        services_sync()
    except ServicesConfigError as exc:
        for error in exc.errors:
            logger.error("services configuration refused, keeping the previous one: %s", error)
