"""Reading settings from the environment: typed, bounded, and never fatal for a bad value."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("sparkcontrol.settings")


def env_str(name: str, default: str = "") -> str:
    """A string setting; surrounding whitespace is dropped, blank means the default."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer setting. Blank, malformed or out-of-range values fall back to the default with a warning."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        if raw is not None:
            logger.warning("%s is blank; using the default %s", name, default)
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        logger.warning("%s=%r is not a whole number; using the default %s", name, raw, default)
        return default
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        logger.warning("%s=%s is outside %s..%s; using the default %s", name, value, minimum, maximum, default)
        return default
    return value


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """A decimal setting with the same fallback rules as env_int."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        if raw is not None:
            logger.warning("%s is blank; using the default %s", name, default)
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        logger.warning("%s=%r is not a number; using the default %s", name, raw, default)
        return default
    if value != value or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        logger.warning("%s=%s is outside %s..%s; using the default %s", name, value, minimum, maximum, default)
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    """A yes/no setting: 1/true/yes/on and 0/false/no/off; anything else is the default with a warning."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    logger.warning("%s=%r is not a yes/no value; using the default %s", name, raw, default)
    return default


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    """A comma-separated list; blank items are dropped."""
    raw = os.environ.get(name, "")
    items = [item.strip() for item in raw.split(",") if item.strip()]
    return items if items else list(default or [])


def env_paths(name: str, default: list[str]) -> list[str]:
    """A comma-separated list of absolute, normalised directories; others are dropped with a warning."""
    import posixpath

    paths = []
    for item in env_list(name, default):
        if not item.startswith("/") or any(ord(ch) < 32 for ch in item):
            logger.warning("%s: %r is not an absolute path; ignoring it", name, item)
            continue
        paths.append(posixpath.normpath(item))
    return paths


def env_seconds_list(name: str) -> list[float] | None:
    """A comma-separated list of delays in seconds (0-86400 each, 1-20 of them); None when unset or bad."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        values = [float(item) for item in raw.split(",") if item.strip()]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 20 or any(not 0 <= value <= 86400 for value in values):
        logger.warning("%s=%r is not a list of 1-20 delays of 0-86400 s; using the default", name, raw)
        return None
    return values
