"""Admin for scheduled actions: editable with the model's validation; runs read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from actions.models import ActionRun, ScheduledAction
from actions.services import action_saved


class ActionRunInline(admin.TabularInline):
    model = ActionRun
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = ("scheduled_for", "trigger", "outcome", "started_at", "finished_at", "detail", "swap")
    readonly_fields = fields
    ordering = ("-scheduled_for",)

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        return super().get_queryset(request).select_related("swap")


@admin.register(ScheduledAction)
class ScheduledActionAdmin(admin.ModelAdmin):
    list_display = ("name", "action", "cron", "timezone", "enabled", "next_run", "when_locked", "missed")
    list_filter = ("action", "enabled")
    search_fields = ("name", "model", "service")
    readonly_fields = ("next_run", "created_at", "updated_at")
    inlines = [ActionRunInline]
    fieldsets = (
        (None, {"fields": ("name", "enabled", "cron", "timezone", "next_run")}),
        ("What it does", {"fields": ("action", "model", "service", "sweep")}),
        ("Policies", {"fields": ("when_locked", "wait_minutes", "missed")}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: ScheduledAction | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "name") if obj is not None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ScheduledAction, form, change: bool) -> None:  # type: ignore[no-untyped-def]
        action_saved(action=obj, actor=request.user.get_username(), created=not change)


@admin.register(ActionRun)
class ActionRunAdmin(admin.ModelAdmin):
    list_display = ("action", "scheduled_for", "trigger", "outcome", "started_at", "finished_at", "swap")
    list_filter = ("outcome", "trigger", "action")
    list_select_related = ("action", "swap")
    date_hierarchy = "scheduled_for"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ActionRun | None = None) -> bool:
        return False
