"""API shapes of model files."""

from __future__ import annotations

from typing import Any

from ninja import Schema


class DownloadOut(Schema):
    """A download: `GET /api/downloads/{id}` (state: queued | running | done | failed | cancelled)."""

    id: str
    model: str
    repo: str
    revision: str
    state: str
    bytes_done: int
    bytes_total: int
    fraction: float | None
    nodes: list[str]
    progress: dict[str, Any]
    error: str | None
    requested_by: str
    cancel_requested: bool
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class DownloadAccepted(Schema):
    """202: the download is queued."""

    id: str
    state: str


class NodeDiskOut(Schema):
    """One node's HF cache: free bytes and each catalog HF model's bytes in it."""

    node: str
    free_bytes: int | None
    models: dict[str, int]
    error: str | None


class RefusalOut(Schema):
    detail: str
