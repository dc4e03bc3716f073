"""Sign-in lockouts into the audit trail: django-axes counts failures and refuses; this records who got locked out."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.dispatch import receiver
from django.http import HttpRequest

from audit.services import audit_record


@receiver(user_locked_out)
def login_lockout_audit(
    sender: Any,
    request: HttpRequest | None = None,
    username: str | None = None,
    ip_address: str | None = None,
    **kwargs: Any,
) -> None:
    """Audit the failure that starts a lockout (axes also signals each refused attempt during one: not those)."""
    if request is None or getattr(request, "axes_failures_since_start", None) is None:
        return
    audit_record(
        actor=f"login:{username or '?'}",
        action="login.locked_out",
        target=username or "",
        detail={
            "ip_address": ip_address or "",
            "path": request.path,
            "failures": request.axes_failures_since_start,
        },
    )
