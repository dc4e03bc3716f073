"""The gateway's settings (settings.SPARKCONTROL_GATEWAY, parsed from the environment in settings.py), read once.

Per-service caps are not here: they are `Service.max_in_flight`, edited in the admin and picked up within a second.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

MIB = 1024 * 1024


@dataclass(frozen=True)
class GatewaySettings:
    """Knobs of the /v1/ front door."""

    open: bool  # no credentials needed: only for a trusted network
    on_demand: bool  # a request for a catalog model that is not loaded starts a swap
    hold_s: float  # how long a request for the model being swapped in waits for it
    queue_wait_s: float  # how long a request waits for a slot under a service's cap
    queue_size: int  # how many requests may wait per service before 429
    retry_after_s: int  # Retry-After on 429 and on 503 for the outgoing model
    max_json_bytes: int
    max_audio_bytes: int
    connect_timeout_s: float
    read_timeout_s: float  # longest silence between two bytes of an upstream response
    tick_s: float  # how often the background refresher reads swaps and publishes the ledger when idle; 0: off
    http_client: str  # "httpx" or "aiohttp" (see docs/decisions/0020-gateway-http-client.md)


@functools.cache
def gateway_settings() -> GatewaySettings:
    """The settings of this process (cached; cleared when a test overrides settings)."""
    conf = settings.SPARKCONTROL_GATEWAY
    return GatewaySettings(
        open=conf["OPEN"],
        on_demand=conf["ON_DEMAND"],
        hold_s=conf["HOLD_SECONDS"],
        queue_wait_s=conf["QUEUE_SECONDS"],
        queue_size=conf["QUEUE_SIZE"],
        retry_after_s=conf["RETRY_AFTER"],
        max_json_bytes=conf["MAX_JSON_BYTES"],
        max_audio_bytes=conf["MAX_AUDIO_BYTES"],
        connect_timeout_s=conf["CONNECT_TIMEOUT"],
        read_timeout_s=conf["READ_TIMEOUT"],
        tick_s=conf["TICK_SECONDS"],
        http_client=conf["HTTP_CLIENT"],
    )


@receiver(setting_changed)
def _settings_changed(**kwargs: object) -> None:
    gateway_settings.cache_clear()
