"""The gateway's settings, from environment variables (documented in .env.example), read once per process.

Per-service caps are not here: they are `Service.max_in_flight`, edited in the admin and picked up within a second.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.core.signals import setting_changed
from django.dispatch import receiver

from sparkcontrol.env import env_bool, env_float, env_int, env_str

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
    """The settings of this process (cached; tests clear the cache after changing the environment)."""
    client = env_str("SPARKCONTROL_GATEWAY_HTTP_CLIENT", "aiohttp").lower()
    return GatewaySettings(
        open=env_bool("SPARKCONTROL_GATEWAY_OPEN", False),
        on_demand=env_bool("SPARKCONTROL_GATEWAY_ON_DEMAND", False),
        hold_s=env_float("SPARKCONTROL_GATEWAY_HOLD_SECONDS", 300.0, minimum=0.0, maximum=86400.0),
        queue_wait_s=env_float("SPARKCONTROL_GATEWAY_QUEUE_SECONDS", 30.0, minimum=0.0, maximum=3600.0),
        queue_size=env_int("SPARKCONTROL_GATEWAY_QUEUE_SIZE", 64, minimum=0, maximum=100000),
        retry_after_s=env_int("SPARKCONTROL_GATEWAY_RETRY_AFTER", 5, minimum=1, maximum=3600),
        max_json_bytes=env_int("SPARKCONTROL_GATEWAY_MAX_JSON_BYTES", 8 * MIB, minimum=1024),
        max_audio_bytes=env_int("SPARKCONTROL_GATEWAY_MAX_AUDIO_BYTES", 25 * MIB, minimum=1024),
        connect_timeout_s=env_float("SPARKCONTROL_GATEWAY_CONNECT_TIMEOUT", 5.0, minimum=0.1, maximum=600.0),
        read_timeout_s=env_float("SPARKCONTROL_GATEWAY_READ_TIMEOUT", 600.0, minimum=1.0, maximum=86400.0),
        tick_s=env_float("SPARKCONTROL_GATEWAY_TICK_SECONDS", 0.25, minimum=0.0, maximum=60.0),
        http_client=client if client in ("httpx", "aiohttp") else "aiohttp",
    )


@receiver(setting_changed)
def _settings_changed(**kwargs: object) -> None:
    gateway_settings.cache_clear()
