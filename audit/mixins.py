"""Admin deletes, single and bulk ("Delete selected"), written to the audit trail like every other edit."""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet
from django.http import HttpRequest

from audit.services import audit_record


class AuditDeletesMixin:
    """Mix into a ModelAdmin; `audit_prefix` names the area (e.g. "catalog" gives "catalog.delete")."""

    audit_prefix = "admin"

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        audit_record(actor=request.user.get_username(), action=f"{self.audit_prefix}.delete", target=str(obj))
        super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        actor = request.user.get_username()
        for obj in queryset:
            audit_record(actor=actor, action=f"{self.audit_prefix}.delete", target=str(obj))
        super().delete_queryset(request, queryset)  # type: ignore[misc]
