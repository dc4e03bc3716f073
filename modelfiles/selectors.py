"""Reads for model files."""

from __future__ import annotations

import uuid

from modelfiles.models import ModelDownload


def download_get(*, download_id: uuid.UUID | str) -> ModelDownload | None:
    """One download by id, or None."""
    return ModelDownload.objects.select_related("model").filter(pk=download_id).first()


def download_list(*, limit: int = 50, model_key: str | None = None) -> list[ModelDownload]:
    """Downloads, newest first (at most `limit`)."""
    downloads = ModelDownload.objects.select_related("model").order_by("-created_at")
    if model_key:
        downloads = downloads.filter(model__key=model_key)
    return list(downloads[:limit])
