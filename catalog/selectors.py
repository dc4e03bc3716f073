"""Reads of the catalog."""

from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import ModelEntry, ModelSecret


def model_list(*, enabled_only: bool = False) -> QuerySet[ModelEntry]:
    """Catalog entries by key (with their secret variables' names at hand for `model_secret_names`)."""
    entries = ModelEntry.objects.order_by("key").prefetch_related("secrets")
    return entries.filter(enabled=True) if enabled_only else entries


def model_get(*, key: str) -> ModelEntry | None:
    """One entry by key, or None."""
    return ModelEntry.objects.filter(key=key).first()


def model_secrets(entry: ModelEntry) -> dict[str, str]:
    """The model's secret container variables {NAME: value}, for the swap engine to deliver off the argv.

    Read from the database every time (never a prefetched copy), so a launch gets the values saved last."""
    return dict(ModelSecret.objects.filter(model_id=entry.pk).order_by("name").values_list("name", "value"))


def model_secret_names(entry: ModelEntry) -> list[str]:
    """The names of the model's secret variables, sorted; what responses show instead of the values."""
    return sorted(secret.name for secret in entry.secrets.all())


def model_container_env(entry: ModelEntry) -> dict[str, str]:
    """The model's non-secret container variables {NAME: value}, in the order they were given."""
    return {str(name): str(value) for name, value in (entry.container_env or {}).items()}
