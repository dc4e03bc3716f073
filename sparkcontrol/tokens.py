"""API token services: create (the only time the token is visible), verify in constant time, revoke."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.db import transaction
from django.utils import timezone

from sparkcontrol.models import APIToken, TokenScope

TOKEN_PREFIX = "sct_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def apitoken_create(*, name: str, scope: str, created_by: str = "") -> tuple[APIToken, str]:
    """Create a token and return it with its plain text, which is never stored."""
    if scope not in TokenScope.values:
        raise ValueError(f"scope must be one of {', '.join(TokenScope.values)}")
    prefix = secrets.token_hex(6)
    plain = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = APIToken(name=name, prefix=prefix, token_hash=_digest(plain), scope=scope, created_by=created_by)
    token.full_clean()
    token.save()
    return token, plain


def apitoken_verify(*, plain: str) -> APIToken | None:
    """The live token matching `plain`, or None. The hash comparison is constant-time."""
    if not plain.startswith(TOKEN_PREFIX) or len(plain) > 200:
        return None
    prefix = plain[len(TOKEN_PREFIX) :].split("_", 1)[0]
    token = APIToken.objects.filter(prefix=prefix, revoked=False).first()
    # Compare against a dummy hash when the prefix is unknown so timing does not reveal which prefixes exist.
    expected = token.token_hash if token else _digest("")
    if not hmac.compare_digest(expected, _digest(plain)) or token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        APIToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def apitoken_revoke(*, name: str) -> bool:
    """Revoke a token by name; False when there is no such live token."""
    return APIToken.objects.filter(name=name, revoked=False).update(revoked=True) > 0
