"""The audit trail: one call, used by every app for actions worth answering "who did that?" about."""

from __future__ import annotations

from typing import Any

from audit.models import AuditEntry

_SECRET_WORDS = ("token", "secret", "password", "authorization")


def audit_record(*, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None) -> AuditEntry:
    """Write one audit entry; keys that look like secrets are dropped from the detail."""
    clean = {k: v for k, v in (detail or {}).items() if not any(word in k.lower() for word in _SECRET_WORDS)}
    return AuditEntry.objects.create(actor=actor[:150], action=action, target=str(target)[:200], detail=clean)
