"""Admin: webhook endpoints (secret shown once, "rotate secret"), deliveries ("send again"), the lock, schedules."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from audit.mixins import AuditDeletesMixin
from audit.services import audit_record
from coordination.models import ScheduledJob, SwapLock, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from coordination.services import (
    lock_release,
    schedule_delete,
    webhook_delivery_resend,
    webhook_endpoint_create,
    webhook_endpoint_rotate_secret,
)
from coordination.webhooks import webhook_url_check, webhook_url_redacted


class WebhookEndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=WebhookEvent.choices, widget=forms.CheckboxSelectMultiple, initial=WebhookEvent.values
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "events", "enabled"]

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("url"):
            try:
                webhook_url_check(cleaned["url"])
            except ValidationError as exc:
                self.add_error("url", exc)
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AuditDeletesMixin, admin.ModelAdmin):
    audit_prefix = "webhook"
    form = WebhookEndpointForm
    list_display = ["url_shown", "events_list", "enabled", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url"]
    actions = ["rotate_secret"]

    @admin.display(description="URL", ordering="url")
    def url_shown(self, obj: WebhookEndpoint) -> str:
        return webhook_url_redacted(obj.url)

    # The admin names an object by str(obj), the whole URL: in the checkbox label and in its history (LogEntry).
    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj: WebhookEndpoint) -> str:
        label = format_html("Select this object for an action - {}", self.url_shown(obj))
        checkbox = forms.CheckboxInput({"class": "action-select", "aria-label": label}, lambda value: False)
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, str(obj.pk))

    def log_addition(self, request: HttpRequest, obj: WebhookEndpoint, message: Any) -> Any:
        return _log_redacted(super().log_addition(request, obj, message), [obj])

    def log_change(self, request: HttpRequest, obj: WebhookEndpoint, message: Any) -> Any:
        return _log_redacted(super().log_change(request, obj, message), [obj])

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        endpoints = list(queryset)
        return _log_redacted(super().log_deletions(request, queryset), endpoints)

    def delete_model(self, request: HttpRequest, obj: WebhookEndpoint) -> None:
        audit_record(actor=request.user.get_username(), action="webhook.delete", target=webhook_url_redacted(obj.url))
        admin.ModelAdmin.delete_model(self, request, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        for obj in queryset:
            audit_record(
                actor=request.user.get_username(), action="webhook.delete", target=webhook_url_redacted(obj.url)
            )
        admin.ModelAdmin.delete_queryset(self, request, queryset)

    @admin.display(description="events")
    def events_list(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events)

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: forms.ModelForm, change: bool) -> None:
        actor = request.user.get_username()
        if change:
            super().save_model(request, obj, form, change)
            audit_record(
                actor=actor,
                action="webhook.change",
                target=webhook_url_redacted(obj.url),
                detail={"events": obj.events},
            )
            return
        endpoint, secret = webhook_endpoint_create(url=obj.url, events=obj.events, enabled=obj.enabled, actor=actor)
        obj.pk, obj.secret, obj._state.adding = endpoint.pk, endpoint.secret, False
        shown = webhook_url_redacted(endpoint.url)
        messages.warning(request, f"Signing secret for {shown} (copy it now, it is not shown again): {secret}")

    @admin.action(description="Rotate the signing secret (shows the new one once)")
    def rotate_secret(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        for endpoint in queryset:
            secret = webhook_endpoint_rotate_secret(endpoint=endpoint, actor=request.user.get_username())
            messages.warning(
                request, f"New signing secret for {webhook_url_redacted(endpoint.url)} (copy it now): {secret}"
            )


def _log_redacted(entries: Any, endpoints: list[WebhookEndpoint]) -> Any:
    """Rename the admin history entries of `endpoints` to their redacted URLs."""
    kind = ContentType.objects.get_for_model(WebhookEndpoint)
    for endpoint in endpoints:
        LogEntry.objects.filter(content_type=kind, object_id=str(endpoint.pk)).update(
            object_repr=webhook_url_redacted(endpoint.url)[:200]
        )
    return entries


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["number", "at", "status_code", "latency_ms", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "event", "endpoint_url", "status", "attempts", "max_attempts", "next_attempt_at"]
    list_filter = ["status", "event"]
    search_fields = ["event_id", "endpoint__url"]
    list_select_related = ["endpoint"]
    fields = ["endpoint_url", "event", "event_id", "status", "attempts", "max_attempts", "next_attempt_at", "body"]
    readonly_fields = fields

    @admin.display(description="endpoint", ordering="endpoint__url")
    def endpoint_url(self, obj: WebhookDelivery) -> str:
        return webhook_url_redacted(obj.endpoint.url)

    inlines = [WebhookAttemptInline]
    actions = ["send_again"]

    @admin.display(description="payload")
    def body(self, obj: WebhookDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, sort_keys=True))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False

    @admin.action(description="Send again (same event id)")
    def send_again(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        for delivery in queryset:
            webhook_delivery_resend(delivery=delivery, actor=request.user.get_username())
        self.message_user(request, f"Queued {len(queryset)} delivery(ies) again.")


@admin.register(SwapLock)
class SwapLockAdmin(admin.ModelAdmin):
    list_display = ["holder", "acquired_at", "expires_at", "epoch", "forced"]
    fields = ["holder", "acquired_at", "expires_at", "epoch", "forced", "updated_at"]
    readonly_fields = fields
    actions = ["force_release"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SwapLock | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SwapLock | None = None) -> bool:
        return False  # deleting the row would restart the epoch

    @admin.action(description="Force-release the lock")
    def force_release(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        released = lock_release(token=None, force=True, actor=request.user.get_username())
        self.message_user(request, "Lock released." if released else "The lock was not held.")


@admin.register(ScheduledJob)
class ScheduledJobAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "schedule", "next_run", "model"]
    search_fields = ["id", "name", "owner", "model"]
    actions = ["remove"]

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # removal goes through the service, which tells dashboards
        return actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # external schedulers register through the API

    def has_change_permission(self, request: HttpRequest, obj: ScheduledJob | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ScheduledJob | None = None) -> bool:
        return False

    @admin.action(description="Remove from the registry", permissions=["view"])
    def remove(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        removed = sum(
            schedule_delete(job_id=job_id, actor=request.user.get_username())
            for job_id in queryset.values_list("id", flat=True)
        )
        self.message_user(request, f"Removed {removed} entry(ies).")
