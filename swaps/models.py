"""Swaps: the durable record of each model change, its event log, and what is being served now."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class SwapState(models.TextChoices):
    QUEUED = "queued"
    PREFLIGHT = "preflight"
    STOPPING = "stopping"
    LAUNCHING = "launching"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


ACTIVE_STATES = (SwapState.QUEUED, SwapState.PREFLIGHT, SwapState.STOPPING, SwapState.LAUNCHING, SwapState.LOADING)
TERMINAL_STATES = (SwapState.READY, SwapState.FAILED, SwapState.CANCELLED, SwapState.INTERRUPTED)
# The steps a dashboard shows, in order.
STEPS = (SwapState.PREFLIGHT, SwapState.STOPPING, SwapState.LAUNCHING, SwapState.LOADING, SwapState.READY)


class Swap(models.Model):
    """One request to serve a model; the row is the truth, the runner task moves it through its states."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_key = models.CharField(max_length=64, db_index=True)
    model = models.ForeignKey("catalog.ModelEntry", null=True, on_delete=models.SET_NULL, related_name="swaps")
    state = models.CharField(max_length=16, choices=SwapState.choices, default=SwapState.QUEUED, db_index=True)
    dry_run = models.BooleanField(default=False)
    forced = models.BooleanField(default=False, help_text="Requested with force=true past a held lock.")
    requested_by = models.CharField(max_length=150)
    lock_epoch = models.PositiveIntegerField(null=True, blank=True)
    # True while the swap holds the cluster's single swap slot; NULL afterwards (NULLs never collide).
    active = models.BooleanField(null=True, default=None, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    commands = models.JSONField(default=list, blank=True, help_text="The commands run (or, dry run, to be run).")
    checks = models.JSONField(default=list, blank=True, help_text="Pre-flight results.")
    launcher = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the launcher on the head could do, the node selection, container and multi-node backend used.",
    )
    progress = models.JSONField(
        null=True,
        blank=True,
        help_text="While loading and after: phase, fraction of the whole load (0..1), eta_seconds (null on a first "
        "load), and whether a phase runs far beyond its history.",
    )
    phase_durations = models.JSONField(
        null=True,
        blank=True,
        help_text="Seconds spent in each loading phase, recorded when the swap became ready: the next loads' ETA.",
    )
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=Q(active=True), name="one_active_swap"),
        ]
        indexes = [models.Index(fields=["-created_at", "id"], name="swap_history")]

    def __str__(self) -> str:
        return f"{self.model_key} {self.state} ({self.id})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


class EventKind(models.TextChoices):
    STATE = "state"
    LOG = "log"
    PROGRESS = "progress"


class SwapEvent(models.Model):
    """One line of a swap's story: a state change, a log line from the container, or progress."""

    swap = models.ForeignKey(Swap, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    at = models.DateTimeField()
    kind = models.CharField(max_length=8, choices=EventKind.choices)
    state = models.CharField(max_length=16, choices=SwapState.choices)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["swap", "seq"]
        constraints = [models.UniqueConstraint(fields=["swap", "seq"], name="swap_event_seq")]

    def __str__(self) -> str:
        return f"{self.swap_id}#{self.seq} {self.kind} {self.message[:40]}"


class ServingState(models.Model):
    """The single row saying what vLLM serves now: set when a swap is ready, cleared when one stops it."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    model_key = models.CharField(max_length=64, blank=True)
    served_model_name = models.CharField(max_length=128, blank=True)
    since = models.DateTimeField(null=True, blank=True)
    swap = models.ForeignKey(Swap, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.CheckConstraint(name="serving_state_singleton", condition=Q(id=1))]

    def __str__(self) -> str:
        return self.model_key or "(nothing)"


class GatewayLedger(models.Model):
    """One gateway process's requests in flight to the head vLLM, by model key, with a heartbeat.

    Written by the process itself off the request path (swaps/drain.py); read by a swap's drain, so web processes
    and worker processes on different machines agree on what is still running before a stop.
    """

    process = models.CharField(max_length=128, primary_key=True)
    in_flight = models.JSONField(default=dict, blank=True, help_text="Model key -> requests in flight.")
    seen_swap = models.UUIDField(
        null=True, blank=True, help_text="The stopping swap this process has seen (it refuses the outgoing model)."
    )
    beat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.process} {self.in_flight}"
