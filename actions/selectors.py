"""Reading scheduled actions and their runs."""

from __future__ import annotations

from django.db.models import QuerySet

from actions.models import ActionRun, ScheduledAction

RUNS_MAX_LIMIT = 200


def action_get(*, name: str) -> ScheduledAction | None:
    """The action with this name, or None."""
    return ScheduledAction.objects.filter(name=name).first()


def action_list() -> QuerySet[ScheduledAction]:
    """Every action, soonest next run first (paused ones last)."""
    return ScheduledAction.objects.all()


def action_runs(*, action: ScheduledAction, limit: int = 50, before: int | None = None) -> list[ActionRun]:
    """An action's runs, newest first; `before` (a run id) pages back."""
    runs = action.runs.select_related("action").order_by("-scheduled_for", "-id")
    if before is not None:
        pivot = ActionRun.objects.filter(pk=before, action=action).values_list("scheduled_for", flat=True).first()
        if pivot is not None:
            runs = runs.filter(scheduled_for__lt=pivot)
    return list(runs[: max(1, min(limit, RUNS_MAX_LIMIT))])


def action_last_runs(*, actions: list[ScheduledAction]) -> dict[int, ActionRun]:
    """The latest run of each action, by action id (one query per action; the list is short)."""
    latest = {}
    for action in actions:
        run = action.runs.select_related("action").order_by("-scheduled_for", "-id").first()
        if run is not None:
            latest[action.pk] = run
    return latest
