"""Admin for API tokens (shown once on creation) and the read-only audit trail."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from sparkcontrol.admin_audit import AuditDeletesMixin
from sparkcontrol.audit import audit_record
from sparkcontrol.models import APIToken, AuditEntry
from sparkcontrol.tokens import apitoken_create, token_epoch_bump


class APITokenForm(forms.ModelForm):
    class Meta:
        model = APIToken
        fields = ["name", "scope", "expires_at"]


@admin.register(APIToken)
class APITokenAdmin(AuditDeletesMixin, admin.ModelAdmin):
    audit_prefix = "token"
    list_display = ["name", "scope", "prefix", "created_by", "created_at", "last_used_at", "expires_at", "revoked"]
    list_filter = ["scope", "revoked"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: APIToken | None = None, **kwargs):  # type: ignore[override]
        if obj is None:
            kwargs["form"] = APITokenForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: APIToken | None = None) -> list[str]:
        if obj is None:
            return []
        return ["name", "prefix", "created_by", "created_at", "last_used_at"]

    def get_fields(self, request: HttpRequest, obj: APIToken | None = None) -> list[str]:
        if obj is None:
            return ["name", "scope", "expires_at"]
        return ["name", "prefix", "scope", "revoked", "expires_at", "created_by", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: APIToken, form: forms.ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            token_epoch_bump()  # revoked, rescoped or its expiry moved: caches in every process re-verify it
            audit_record(actor=request.user.get_username(), action="token.change", target=obj.name)
            return
        token, plain = apitoken_create(
            name=obj.name, scope=obj.scope, created_by=request.user.get_username(), expires_at=obj.expires_at
        )
        obj.pk = token.pk
        obj.prefix, obj.token_hash = token.prefix, token.token_hash
        audit_record(actor=request.user.get_username(), action="token.create", target=token.name)
        messages.warning(request, f"Token for {token.name} (copy it now, it is not shown again): {plain}")

    def delete_model(self, request: HttpRequest, obj: APIToken) -> None:
        super().delete_model(request, obj)
        token_epoch_bump()

    def delete_queryset(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        super().delete_queryset(request, queryset)
        token_epoch_bump()

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        names = list(queryset.values_list("name", flat=True))
        queryset.update(revoked=True)
        token_epoch_bump()
        for name in names:
            audit_record(actor=request.user.get_username(), action="token.revoke", target=name)
        self.message_user(request, f"Revoked {len(names)} token(s).")


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
