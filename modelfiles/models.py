"""Model files on the nodes: a download of a catalog model into the HF cache of every node that needs it."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from catalog.models import ModelEntry


class DownloadState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_DOWNLOAD_STATES = (DownloadState.QUEUED, DownloadState.RUNNING)
TERMINAL_DOWNLOAD_STATES = (DownloadState.DONE, DownloadState.FAILED, DownloadState.CANCELLED)


class ModelDownload(models.Model):
    """One download of a catalog model's HF repo into the HF cache of each node that runs it; the row is the truth.

    `progress` holds each node's numbers (`{"spark1": {"bytes_done", "bytes_total", "state", "detail"}}`);
    `bytes_done` / `bytes_total` are their sums. `attempt` grows each time a worker takes the download up again
    (after a restart), so a task of an earlier attempt stops instead of running it twice.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey(ModelEntry, on_delete=models.CASCADE, related_name="downloads")
    repo = models.CharField(max_length=200, help_text="The repo as it was when the download was requested.")
    revision = models.CharField(max_length=200, default="main")
    nodes = models.JSONField(default=list, blank=True, help_text="Names of the nodes it downloads to.")
    state = models.CharField(max_length=16, choices=DownloadState.choices, default=DownloadState.QUEUED)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempt = models.PositiveIntegerField(default=1)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model"],
                condition=Q(state__in=["queued", "running"]),
                name="modeldownload_one_active_per_model",
            ),
            models.CheckConstraint(name="modeldownload_bytes_not_negative", condition=Q(bytes_done__gte=0)),
        ]

    def __str__(self) -> str:
        return f"{self.repo} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_DOWNLOAD_STATES

    @property
    def fraction(self) -> float | None:
        if self.state == DownloadState.DONE:
            return 1.0
        if not self.bytes_total:
            return None
        return min(self.bytes_done / self.bytes_total, 1.0)
