"""Admin for model files: downloads (read-only, with their progress), and the nodes' disk on the changelist."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from cluster.ssh import SshError
from modelfiles.fit import human_bytes
from modelfiles.models import ModelDownload
from modelfiles.services import DownloadRefused, download_cancel, node_disk_report


@admin.register(ModelDownload)
class ModelDownloadAdmin(admin.ModelAdmin):
    list_display = ("model", "state", "percent", "size", "nodes_list", "requested_by", "created_at", "finished_at")
    list_filter = ("state",)
    readonly_fields = [field.name for field in ModelDownload._meta.fields]
    actions = ["cancel_downloads"]
    change_list_template = "admin/modelfiles/modeldownload/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="done")
    def percent(self, obj: ModelDownload) -> str:
        return "-" if obj.fraction is None else f"{obj.fraction * 100:.0f} %"

    @admin.display(description="size")
    def size(self, obj: ModelDownload) -> str:
        return f"{human_bytes(obj.bytes_done)} of {human_bytes(obj.bytes_total)}"

    @admin.display(description="nodes")
    def nodes_list(self, obj: ModelDownload) -> str:
        return ", ".join(obj.nodes)

    @admin.action(description="Cancel the selected downloads")
    def cancel_downloads(self, request: HttpRequest, queryset: Any) -> None:
        for download in queryset:
            try:
                download_cancel(download=download, actor=request.user.get_username())
            except DownloadRefused as exc:
                self.message_user(request, f"{download}: {exc.detail}", messages.WARNING)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        """The list, with each node's free disk and the catalog models' bytes in its HF cache (read over SSH)."""
        try:
            disk = node_disk_report()
        except SshError as exc:
            disk = [{"node": "?", "free_bytes": None, "models": {}, "error": str(exc)}]
        rows = [
            {
                "node": row["node"],
                "free": human_bytes(row["free_bytes"]) if row["free_bytes"] is not None else "?",
                "error": row["error"],
                "models": [(key, human_bytes(size)) for key, size in row["models"].items() if size],
            }
            for row in disk
        ]
        return super().changelist_view(request, {**(extra_context or {}), "disk_rows": rows})
