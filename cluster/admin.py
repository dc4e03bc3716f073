"""Topology admin: Spark hosts, the single cluster-settings row, and services (file-owned fields read-only)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from audit.mixins import AuditDeletesMixin
from audit.services import audit_record
from cluster.models import ClusterSettings, Service, ServiceRestart, SparkHost
from cluster.restarts import RestartRefused, service_restart_request
from cluster.selectors import service_base_url, service_is_disabled
from cluster.services import cluster_settings_get


class AuditedAdmin(AuditDeletesMixin, admin.ModelAdmin):
    """Every save and delete (single or bulk) of topology is written to the audit trail."""

    audit_prefix = "topology"

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)
        fields = sorted(form.changed_data) if form is not None else []
        audit_record(
            actor=request.user.get_username(),
            action=f"{self.audit_prefix}.{'change' if change else 'create'}",
            target=str(obj),
            detail={"fields": fields},
        )


@admin.register(SparkHost)
class SparkHostAdmin(AuditedAdmin):
    audit_prefix = "spark"
    list_display = ["name", "role", "address", "ssh_port", "ssh_user", "key_pinned", "enabled"]
    list_filter = ["role", "enabled"]
    search_fields = ["name", "address"]

    @admin.display(boolean=True, description="host key pinned")
    def key_pinned(self, obj: SparkHost) -> bool:
        return bool(obj.host_key)


@admin.register(ClusterSettings)
class ClusterSettingsAdmin(AuditedAdmin):
    audit_prefix = "settings"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ClusterSettings | None = None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):  # type: ignore[no-untyped-def]
        row = cluster_settings_get()
        return HttpResponseRedirect(reverse("admin:cluster_clustersettings_change", args=[row.pk]))


@admin.register(Service)
class ServiceAdmin(AuditedAdmin):
    audit_prefix = "service"
    list_display = ["key", "name", "kind", "node", "effective_url", "read_only", "shown", "max_in_flight", "source"]
    list_filter = ["kind", "enabled", "source"]
    search_fields = ["key", "name"]
    actions = ["restart"]
    readonly_fields = [
        "key",
        "name",
        "kind",
        "node",
        "url",
        "port",
        "effective_url",
        "health_path",
        "expected_status",
        "models_served",
        "read_only",
        "container",
        "gpu",
        "link",
        "source",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # services come from the shipped file and services-overrides.yaml

    @admin.action(description="Restart the selected services' containers", permissions=["change"])
    def restart(self, request: HttpRequest, queryset: QuerySet[Service]) -> None:
        """Queue a restart of each selected service (the same checks as the API: container, lock, one at a time)."""
        for service in queryset.order_by("key"):
            try:
                restart = service_restart_request(key=service.key, requested_by=request.user.get_username())
            except RestartRefused as exc:
                self.message_user(request, f"Not restarted: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Restart {restart.pk} of {service.key!r} queued.", messages.SUCCESS)

    @admin.display(description="answers at")
    def effective_url(self, obj: Service) -> str:
        """Where probes and the gateway reach it: its URL (overrides included), else the node and the effective
        port (the cluster's vLLM port for the head vLLM)."""
        return service_base_url(service=obj)

    @admin.display(boolean=True, description="shown")
    def shown(self, obj: Service) -> bool:
        return not service_is_disabled(service=obj)


@admin.register(ServiceRestart)
class ServiceRestartAdmin(admin.ModelAdmin):
    """Restarts are records of what happened: read-only here, started from the Service list's action."""

    list_display = ["id", "service", "state", "container", "host", "requested_by", "requested_at", "downtime_s"]
    list_filter = ["state"]
    search_fields = ["service__key", "container", "requested_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ServiceRestart | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ServiceRestart | None = None) -> bool:
        return False
