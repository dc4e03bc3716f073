"""API token services: create (the only time the token is visible), verify in constant time, revoke, and the
revocation epoch that lets a process cache verified tokens without serving a revoked one.

The epoch is a value that changes, in every process at once, whenever a token stops being valid early (revoked,
deleted, its expiry moved). A cache stores the epoch it read *before* verifying and trusts an entry only while the
epoch is unchanged. Scaled out it is a Redis key (one GET); on the embedded default (SQLite, one machine) it is the
size and mtime of a file in the data directory (one stat), which `manage.py apitoken revoke` in another process
changes too. Postgres without Redis has no shared epoch: nothing is cached there.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import APIToken, TokenScope

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "sct_"
EPOCH_KEY = "sparkcontrol:api-token-epoch"
EPOCH_FILE = "api-token-epoch"

# Why a bearer token was refused, in the words the 401 uses.
UNKNOWN = "token not recognised"
REVOKED = "token revoked"
EXPIRED = "token expired"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def apitoken_create(
    *, name: str, scope: str, created_by: str = "", expires_at: datetime | None = None
) -> tuple[APIToken, str]:
    """Create a token and return it with its plain text, which is never stored."""
    if scope not in TokenScope.values:
        raise ValueError(f"scope must be one of {', '.join(TokenScope.values)}")
    prefix = secrets.token_hex(6)
    plain = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = APIToken(
        name=name,
        prefix=prefix,
        token_hash=_digest(plain),
        scope=scope,
        created_by=created_by,
        expires_at=expires_at,
    )
    token.full_clean()
    token.save()
    return token, plain


def apitoken_check(*, plain: str) -> tuple[APIToken | None, str]:
    """(the live token matching `plain`, "") or (None, why: UNKNOWN, REVOKED or EXPIRED). Constant-time compare."""
    if not plain.startswith(TOKEN_PREFIX) or len(plain) > 200:
        return None, UNKNOWN
    prefix = plain[len(TOKEN_PREFIX) :].split("_", 1)[0]
    token = APIToken.objects.filter(prefix=prefix).first()
    # Compare against a dummy hash when the prefix is unknown so timing does not reveal which prefixes exist.
    expected = token.token_hash if token else _digest("")
    if not hmac.compare_digest(expected, _digest(plain)) or token is None:
        return None, UNKNOWN
    if token.revoked:
        return None, REVOKED
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        return None, EXPIRED
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        APIToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token, ""


def apitoken_verify(*, plain: str) -> APIToken | None:
    """The live token matching `plain`, or None. The hash comparison is constant-time."""
    return apitoken_check(plain=plain)[0]


def apitoken_revoke(*, name: str) -> bool:
    """Revoke a token by name; False when there is no such live token. Caches everywhere drop it on commit."""
    with transaction.atomic():
        revoked = APIToken.objects.filter(name=name, revoked=False).update(revoked=True) > 0
        if revoked:
            token_epoch_bump()
    return revoked


# --- the revocation epoch -----------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _redis(url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def _epoch_path() -> Path:
    return Path(settings.DATA_DIR) / EPOCH_FILE


def token_epoch() -> str:
    """This moment's revocation epoch; "" when it cannot be known (then nothing may be served from a cache)."""
    url = getattr(settings, "REDIS_URL", "")
    if url:
        try:
            value = _redis(url).get(EPOCH_KEY)
        except Exception:  # noqa: BLE001 - Redis down: verify every request instead of trusting a cache
            logger.warning("cannot read the API token epoch from Redis; tokens are verified on every request")
            return ""
        return "r" + (value.decode() if value else "0")
    if "sqlite" not in settings.DATABASES["default"]["ENGINE"]:
        return ""
    try:
        stat = os.stat(_epoch_path())
    except FileNotFoundError:
        return "f0"
    except OSError:
        return ""
    return f"f{stat.st_size}:{stat.st_mtime_ns}"


def token_epoch_bump() -> None:
    """Change the epoch once the current transaction commits (so no cache re-verifies before the change shows)."""
    transaction.on_commit(_bump_now)


def _bump_now() -> None:
    url = getattr(settings, "REDIS_URL", "")
    if url:
        try:
            _redis(url).incr(EPOCH_KEY)
        except Exception:  # noqa: BLE001 - the revocation is committed; caches then expire on their own
            logger.exception("cannot bump the API token epoch in Redis")
    # The file too: a process without Redis settings on the same data directory (a management command) sees it.
    with open(_epoch_path(), "a") as handle:
        handle.write(".")
