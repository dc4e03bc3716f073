"""Swap history in the admin (read-only): the row, its checks and commands, and its event log."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from swaps.models import Swap, SwapEvent


class SwapEventInline(admin.TabularInline):
    model = SwapEvent
    fields = ["seq", "at", "kind", "state", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    ordering = ["seq"]


@admin.register(Swap)
class SwapAdmin(admin.ModelAdmin):
    list_display = ["created_at", "model_key", "state", "dry_run", "forced", "requested_by", "duration"]
    list_filter = ["state", "dry_run", "forced"]
    search_fields = ["model_key", "requested_by", "id"]
    date_hierarchy = "created_at"
    inlines = [SwapEventInline]
    readonly_fields = [f.name for f in Swap._meta.fields]

    @admin.display(description="duration (s)")
    def duration(self, obj: Swap) -> float | None:
        return obj.duration_s

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Swap | None = None) -> bool:
        return False
