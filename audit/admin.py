"""Admin for the audit trail: read-only, filterable by area and by kind of actor."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from audit.models import AuditEntry


class AuditAreaFilter(admin.SimpleListFilter):
    """The kind of action: the part of the action name before the dot, topology's three kinds together."""

    title = "area"
    parameter_name = "area"
    AREAS = {
        "swap": ("swap.",),
        "lock": ("lock.",),
        "catalog": ("catalog.",),
        "topology": ("spark.", "settings.", "service.", "topology."),
        "webhook": ("webhook.",),
        "token": ("token.",),
    }

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(area, area) for area in self.AREAS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        prefixes = self.AREAS.get(self.value() or "")
        if not prefixes:
            return queryset
        condition = Q()
        for prefix in prefixes:
            condition |= Q(action__startswith=prefix)
        return queryset.filter(condition)


class AuditActorKindFilter(admin.SimpleListFilter):
    """People (admin, dashboard, API sessions) apart from automation (API tokens) and operators' commands."""

    title = "actor kind"
    parameter_name = "actor_kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("token", "API token"), ("command", "manage.py"), ("person", "person")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        automation = Q(actor__startswith="token:") | Q(actor="manage.py")
        if self.value() == "token":
            return queryset.filter(actor__startswith="token:")
        if self.value() == "command":
            return queryset.filter(actor="manage.py")
        if self.value() == "person":
            return queryset.exclude(automation)
        return queryset


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "action", "target", "summary"]
    list_filter = [AuditAreaFilter, "action", AuditActorKindFilter, "actor", "at"]
    search_fields = ["actor", "action", "target"]
    date_hierarchy = "at"
    fields = ["at", "actor", "action", "target", "detail_pretty"]
    readonly_fields = fields
    list_per_page = 100

    @admin.display(description="detail")
    def summary(self, obj: AuditEntry) -> str:
        text = ", ".join(f"{key}={value}" for key, value in sorted(obj.detail.items()))
        return text if len(text) <= 120 else text[:119] + "…"

    @admin.display(description="detail")
    def detail_pretty(self, obj: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.detail, indent=2, sort_keys=True, default=str))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
