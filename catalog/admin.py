"""Catalog admin: list with a "local" badge, a separate local-model form, the disk-delete action, the launcher's
fields as text, and write-only secret variables."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from audit.mixins import AuditDeletesMixin
from audit.services import audit_record
from catalog.forms import LocalModelForm, ModelEntryForm, ModelSecretForm
from catalog.models import ModelEntry, ModelSecret
from catalog.services import DiskDeleteRefused, model_disk_delete


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request, model_admin):  # type: ignore[no-untyped-def]
        return [("local", "local path"), ("hf", "Hugging Face repo")]

    def queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        if self.value() == "local":
            return queryset.exclude(local_path="")
        if self.value() == "hf":
            return queryset.filter(local_path="")
        return queryset


class ModelSecretInline(admin.TabularInline):
    """Secret container variables: names are shown, values never (a password field that starts empty)."""

    model = ModelSecret
    form = ModelSecretForm
    extra = 1
    verbose_name = "secret variable"
    verbose_name_plural = "secret variables (values are write-only: leave blank to keep)"


@admin.register(ModelEntry)
class ModelEntryAdmin(AuditDeletesMixin, admin.ModelAdmin):
    audit_prefix = "catalog"
    form = ModelEntryForm
    inlines = [ModelSecretInline]
    list_display = ["key", "name", "source_badge", "nodes", "enabled"]
    list_filter = [SourceFilter, "nodes", "enabled"]
    search_fields = ["key", "name", "repo", "local_path", "served_model_name"]
    actions = ["delete_from_disk"]
    fieldsets = [
        (None, {"fields": ["key", "name", "enabled"]}),
        ("Source (exactly one)", {"fields": ["repo", "local_path"]}),
        ("Serving", {"fields": ["served_model_name", "nodes", "vllm_args"]}),
        ("Knobs", {"fields": list(ModelEntry.KNOB_FIELDS)}),
        ("Launcher", {"fields": list(ModelEntry.LAUNCHER_FIELDS)}),
    ]

    @admin.display(description="source", ordering="local_path")
    def source_badge(self, obj: ModelEntry) -> str:
        if obj.is_local:
            return format_html(
                '<span class="sc-badge sc-local" title="{}">local</span> {}', obj.local_path, obj.local_path
            )
        return obj.repo

    def get_urls(self):  # type: ignore[no-untyped-def]
        custom = [
            path(
                "add-local/",
                self.admin_site.admin_view(self.add_local_view),
                name="catalog_modelentry_add_local",
            )
        ]
        return custom + super().get_urls()

    def add_local_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = LocalModelForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            entry = form.save()
            audit_record(actor=request.user.get_username(), action="catalog.create", target=entry.key)
            self.message_user(request, f"Added local model {entry.key} ({entry.local_path}).", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:catalog_modelentry_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Add local model",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/catalog/modelentry/add_local.html", context)

    def save_model(self, request: HttpRequest, obj: ModelEntry, form, change: bool) -> None:  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)
        action = "catalog.change" if change else "catalog.create"
        audit_record(actor=request.user.get_username(), action=action, target=obj.key)

    @admin.action(description="Delete model files from the nodes' disks")
    def delete_from_disk(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        for entry in queryset:
            try:
                outcome = model_disk_delete(entry=entry, actor=request.user.get_username())
            except DiskDeleteRefused as exc:
                self.message_user(request, f"{entry.key}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{entry.key}: {outcome}", messages.SUCCESS)
