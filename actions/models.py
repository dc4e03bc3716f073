"""Control-plane actions Spark Control runs itself on a cron schedule (swap, warm, restart, sweep), and their runs.

Only control-plane work lives here; business pipelines stay in the application services that call the API.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from coordination.models import SCHEDULE_ID_PATTERN, validate_schedule_id

CRON_MAX_LENGTH = 100


class ActionKind(models.TextChoices):
    SWAP = "swap", "swap to a model"
    WARM = "warm", "warm the served model"
    RESTART = "restart", "restart a service"
    SWEEP = "sweep", "run a probe sweep"


class SweepChoice(models.TextChoices):
    STATUS = "status", "status"
    DEEP = "deep", "deep health"
    CONNECTIVITY = "connectivity", "connectivity"


class WhenLocked(models.TextChoices):
    SKIP = "skip", "skip the run"
    WAIT = "wait", "wait, then skip"


class MissedPolicy(models.TextChoices):
    RUN_LATEST = "run_latest", "run the latest missed occurrence once"
    SKIP = "skip", "skip missed occurrences"


def cron_error(expression: str) -> str | None:
    """Why `expression` is not a cron expression; None when it is one.

    Five fields (minute hour day-of-month month day-of-week), optionally a sixth for seconds, or an @-macro such
    as @daily.
    """
    text = (expression or "").strip()
    if not text:
        return "give a cron expression such as '0 2 * * *'"
    if len(text) > CRON_MAX_LENGTH:
        return f"give at most {CRON_MAX_LENGTH} characters"
    if not text.startswith("@") and len(text.split()) not in (5, 6):
        return "give five fields (minute hour day-of-month month day-of-week, and optionally seconds), e.g. '0 2 * * *'"
    from croniter import croniter  # here: ~1 MiB, loaded once a schedule is written or run

    if text in ("@reboot",) or not croniter.is_valid(text):
        return f"{text!r} is not a valid cron expression"
    return None


def timezone_error(name: str) -> str | None:
    """Why `name` is not an IANA time zone name; None when it is one."""
    if not name or name not in available_timezones():
        return f"{name!r} is not an IANA time zone name (e.g. 'Europe/Berlin' or 'UTC')"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not an IANA time zone name (e.g. 'Europe/Berlin' or 'UTC')"
    return None


class ScheduledAction(models.Model):
    """A control-plane action Spark Control runs itself whenever its cron expression fires in its time zone."""

    name = models.CharField(max_length=64, unique=True, validators=[validate_schedule_id])
    cron = models.CharField(
        max_length=CRON_MAX_LENGTH, help_text="Cron expression, e.g. '0 2 * * *' (a sixth field is seconds)."
    )
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA time zone the cron expression is in.")
    action = models.CharField(max_length=16, choices=ActionKind.choices)
    model = models.CharField(max_length=64, blank=True, default="", help_text="Catalog key (swap).")
    service = models.CharField(max_length=64, blank=True, default="", help_text="Service key (restart).")
    sweep = models.CharField(max_length=16, blank=True, default="", choices=SweepChoice.choices, help_text="(sweep)")
    when_locked = models.CharField(
        max_length=8,
        choices=WhenLocked.choices,
        default=WhenLocked.SKIP,
        help_text="A swap finding the swap lock held by someone else: skip at once, or wait up to wait_minutes.",
    )
    wait_minutes = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(1440)], help_text="1 to 1440."
    )
    missed = models.CharField(
        max_length=16,
        choices=MissedPolicy.choices,
        default=MissedPolicy.RUN_LATEST,
        help_text="Occurrences that passed while Spark Control was not running: run the latest once, or skip.",
    )
    enabled = models.BooleanField(default=True)
    next_run = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="The next occurrence not yet handled; empty when paused."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "scheduled action"
        ordering = [models.F("next_run").asc(nulls_last=True), "name"]
        constraints = [
            models.CheckConstraint(name="scheduledaction_name_format", condition=Q(name__regex=SCHEDULE_ID_PATTERN)),
            models.CheckConstraint(
                name="scheduledaction_argument",
                condition=(
                    (Q(action=ActionKind.SWAP) & ~Q(model=""))
                    | Q(action=ActionKind.WARM)
                    | (Q(action=ActionKind.RESTART) & ~Q(service=""))
                    | (Q(action=ActionKind.SWEEP) & Q(sweep__in=SweepChoice.values))
                ),
            ),
            models.CheckConstraint(
                name="scheduledaction_wait_minutes", condition=Q(wait_minutes__gte=1, wait_minutes__lte=1440)
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def holder(self) -> str:
        """Who it acts as: the swap lock's holder and the actor of its audit entries (at most 64 characters)."""
        return f"scheduler:{self.name}"[:64]

    @property
    def argument(self) -> str:
        return {ActionKind.SWAP: self.model, ActionKind.RESTART: self.service, ActionKind.SWEEP: self.sweep}.get(
            ActionKind(self.action), ""
        )

    def occurrence_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (aware), in UTC."""
        from croniter import croniter

        zone = ZoneInfo(self.timezone)
        return croniter(self.cron, moment.astimezone(zone)).get_next(datetime).astimezone(UTC)

    def occurrence_at_or_before(self, moment: datetime) -> datetime:
        """The latest occurrence at or before `moment` (aware), in UTC."""
        from croniter import croniter

        zone = ZoneInfo(self.timezone)
        # get_prev is strictly before its start: start just after `moment` so an occurrence at `moment` counts.
        start = (moment + timedelta(microseconds=1)).astimezone(zone)
        return croniter(self.cron, start).get_prev(datetime).astimezone(UTC)

    def clean(self) -> None:
        from catalog.models import ModelEntry
        from cluster.models import Service

        errors: dict[str, str] = {}
        if problem := cron_error(self.cron):
            errors["cron"] = problem
        if problem := timezone_error(self.timezone):
            errors["timezone"] = problem
        if self.action == ActionKind.SWAP:
            if not self.model:
                errors["model"] = "a swap needs a catalog model key"
            elif not ModelEntry.objects.filter(key=self.model).exists():
                errors["model"] = f"no catalog model with key {self.model!r}"
        elif self.model:
            errors["model"] = "only a swap takes a model"
        if self.action == ActionKind.RESTART:
            if not self.service:
                errors["service"] = "a restart needs a service key"
            elif not Service.objects.filter(key=self.service).exists():
                errors["service"] = f"no service with key {self.service!r}"
        elif self.service:
            errors["service"] = "only a restart takes a service"
        if self.action == ActionKind.SWEEP:
            if self.sweep not in SweepChoice.values:
                errors["sweep"] = f"a sweep needs one of {', '.join(SweepChoice.values)}"
        elif self.sweep:
            errors["sweep"] = "only a sweep takes a sweep kind"
        if errors:
            raise ValidationError(errors)


class RunOutcome(models.TextChoices):
    RUNNING = "running", "running"
    OK = "ok", "ok"
    SKIPPED = "skipped", "skipped"
    FAILED = "failed", "failed"


FINISHED_OUTCOMES = (RunOutcome.OK, RunOutcome.SKIPPED, RunOutcome.FAILED)


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "its schedule"
    MANUAL = "manual", "run now"


class ActionRun(models.Model):
    """One occurrence of a scheduled action (or a run asked for now); the row is the truth about what happened.

    (action, scheduled_for) is unique: claiming an occurrence is inserting its row, so however many workers look,
    each occurrence runs at most once.
    """

    action = models.ForeignKey(ScheduledAction, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=8, choices=RunTrigger.choices, default=RunTrigger.SCHEDULE)
    scheduled_for = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=RunOutcome.choices, default=RunOutcome.RUNNING, db_index=True)
    detail = models.TextField(blank=True)
    swap = models.ForeignKey("swaps.Swap", null=True, blank=True, on_delete=models.SET_NULL, related_name="action_runs")
    result = models.JSONField(default=dict, blank=True, help_text="A sweep's counts by status.")
    worker = models.CharField(max_length=128, blank=True, help_text="host:pid of the process running it.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["action", "scheduled_for"], name="actionrun_one_per_occurrence"),
        ]
        indexes = [models.Index(fields=["action", "-scheduled_for"], name="actionrun_latest")]

    def __str__(self) -> str:
        return f"{self.action.name} {self.scheduled_for:%Y-%m-%d %H:%M} {self.outcome}"

    @property
    def is_finished(self) -> bool:
        return self.outcome in FINISHED_OUTCOMES


class TickLease(models.Model):
    """The single row that keeps one chain of periodic ticks alive however many workers run (cluster's pattern)."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    next_due = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=128, blank=True)

    def __str__(self) -> str:
        return f"next tick {self.next_due.isoformat()}"
