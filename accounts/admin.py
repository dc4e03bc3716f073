"""Admin for API tokens: the token is shown once, on creation; changes re-verify cached tokens everywhere."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from accounts.models import APIToken
from accounts.tokens import apitoken_create, token_epoch_bump
from audit.mixins import AuditDeletesMixin
from audit.services import audit_record


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
