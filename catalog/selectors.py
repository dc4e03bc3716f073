"""Reads of the catalog."""

from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import ModelEntry


def model_list(*, enabled_only: bool = False) -> QuerySet[ModelEntry]:
    """Catalog entries by key."""
    entries = ModelEntry.objects.order_by("key")
    return entries.filter(enabled=True) if enabled_only else entries


def model_get(*, key: str) -> ModelEntry | None:
    """One entry by key, or None."""
    return ModelEntry.objects.filter(key=key).first()
