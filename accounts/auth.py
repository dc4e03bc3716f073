"""Who is calling the API and what they may do.

Automation sends `Authorization: Bearer <token>`; people use their Django session (with CSRF on unsafe
methods). No credentials gives 401 "authentication required"; a token that is not valid gives 401 saying why
(not recognised, revoked, expired); credentials without the needed scope give 403.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.utils import check_csrf

from accounts.models import SCOPE_RANK, TokenScope
from accounts.tokens import UNKNOWN, apitoken_check, token_epoch

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    name: str
    scope: str
    via: str  # "token" or "session"
    user: Any = None
    expires_at: Any = None  # a token's expiry (a datetime), for caches of verified tokens

    @property
    def can_force(self) -> bool:
        return self.scope == TokenScope.ADMIN

    def allows(self, scope: str) -> bool:
        if scope == TokenScope.INFERENCE:
            return self.scope in (TokenScope.INFERENCE, TokenScope.OPERATE, TokenScope.ADMIN)
        return SCOPE_RANK.get(self.scope, 0) >= SCOPE_RANK[scope]


class VerifiedTokens:
    """Bearer tokens this process verified in the last few seconds, so a busy client costs no query per request.

    Keyed by the SHA-256 of the header (never the token). An entry is trusted only while the revocation epoch read
    *before* it was verified is unchanged (`accounts.tokens.token_epoch`: a revocation, deletion or expiry change
    anywhere changes it at once) and the token has not expired; without a shared epoch nothing is cached.
    """

    SECONDS = 5.0
    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Principal, float, str]] = {}

    @staticmethod
    def _key(header: str) -> str:
        return hashlib.sha256(header.encode()).hexdigest()

    def get(self, header: str, epoch: str) -> Principal | None:
        """The cached principal for this header under this epoch, or None."""
        if not epoch:
            return None
        with self._lock:
            hit = self._entries.get(self._key(header))
        if hit is None:
            return None
        principal, deadline, cached_epoch = hit
        if deadline < time.monotonic() or cached_epoch != epoch:
            return None
        if principal.expires_at is not None and principal.expires_at <= timezone.now():
            return None
        return principal

    def remember(self, header: str, principal: Principal, epoch: str) -> None:
        """Keep a token verified under `epoch` (read before verifying, so a revocation in between shows)."""
        if not epoch:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[self._key(header)] = (principal, time.monotonic() + self.SECONDS, epoch)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


verified_tokens = VerifiedTokens()


def bearer_principal(header: str) -> Principal:
    """The principal of an `Authorization: Bearer …` header; CredentialsRefused saying why it is not valid."""
    kind, _, value = header.partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        raise CredentialsRefused(f"{UNKNOWN}: send 'Authorization: Bearer <token>'")
    epoch = token_epoch()  # before verifying: a revocation committed after this read changes the key's epoch
    cached = verified_tokens.get(header, epoch)
    if cached is not None:
        return cached
    token, problem = apitoken_check(plain=value.strip())
    if token is None:
        raise CredentialsRefused(problem)
    principal = Principal(name=f"token:{token.name}", scope=token.scope, via="token", expires_at=token.expires_at)
    verified_tokens.remember(header, principal, epoch)
    return principal


class CredentialsRefused(Exception):
    """A bearer token was sent but is not valid; the message says why, for the 401."""


def principal_from_request(request: HttpRequest) -> Principal | None:
    """Identify the caller by bearer token or session; None when there are no valid credentials."""
    try:
        return _principal(request)
    except CredentialsRefused:
        return None


def _principal(request: HttpRequest) -> Principal | None:
    """The caller; None without credentials; CredentialsRefused when a bearer token is sent but not valid."""
    header = request.headers.get("Authorization", "")
    if header:
        return bearer_principal(header)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if request.method not in SAFE_METHODS and check_csrf(request) is not None:
        raise HttpError(403, "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken")
    scope = TokenScope.ADMIN if (user.is_staff or user.is_superuser) else TokenScope.OPERATE
    return Principal(name=user.get_username(), scope=scope, via="session", user=user)


class ApiAuth:
    """Ninja auth callable requiring at least `scope`; GET routes use read, writes operate or admin."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def __call__(self, request: HttpRequest) -> Principal | None:
        try:
            principal = _principal(request)
        except CredentialsRefused as exc:
            raise HttpError(401, str(exc)) from None
        if principal is None:
            return None
        if not principal.allows(self.scope):
            raise HttpError(403, f"this route needs the '{self.scope}' scope; the credentials have '{principal.scope}'")
        return principal


read_auth = ApiAuth(TokenScope.READ)
operate_auth = ApiAuth(TokenScope.OPERATE)
admin_auth = ApiAuth(TokenScope.ADMIN)
inference_auth = ApiAuth(TokenScope.INFERENCE)


def require_force(principal: Principal) -> None:
    """Raise 403 unless the caller may override the lock (staff session or admin-scope token)."""
    if not principal.can_force:
        raise HttpError(403, "force=true needs a staff user or an admin-scope token")
