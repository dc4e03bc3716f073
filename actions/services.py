"""Scheduled actions: create/update/delete them, claim due occurrences exactly once, and run them.

How a run happens. A periodic tick (a django-tasks task, kept alive as one chain by `TickLease`, the pattern of
cluster/schedule.py) looks for enabled actions whose `next_run` has passed. For each it moves `next_run` to the
following occurrence with one conditional UPDATE (`... WHERE next_run = <the value read>`) and, in the same
transaction, inserts the `ActionRun` of the occurrence; (action, scheduled_for) is unique in the database. However
many workers tick at once, one of them wins an occurrence and the others match no row (or hit the constraint).
The run itself is a task on the "actions" queue, enqueued after that transaction commits.

Missed occurrences. An occurrence counts as missed when more than one occurrence passed since `next_run`, or when
the tick comes more than ACTIONS_MISSED_AFTER_SECONDS after it (Spark Control was not running). The action's policy
decides: `run_latest` runs the latest missed occurrence once, `skip` records it as skipped. Never a burst.

A run whose process stopped is left running in the table; housekeeping finds it (its worker is gone, or its
heartbeat went stale) and records it as failed, "interrupted: the process running it stopped".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from actions.models import (
    ActionKind,
    ActionRun,
    MissedPolicy,
    RunOutcome,
    RunTrigger,
    ScheduledAction,
    TickLease,
    WhenLocked,
)
from audit.services import audit_record
from cluster.schedule import tick_results_prune
from realtime.broadcast import broadcast_on_commit

logger = logging.getLogger(__name__)

ACTION_FIELDS = (
    "cron",
    "timezone",
    "action",
    "model",
    "service",
    "sweep",
    "when_locked",
    "wait_minutes",
    "missed",
    "enabled",
)
INTERRUPTED = "interrupted: the process running it stopped"
HEARTBEAT_SECONDS = 5.0
LOCK_POLL_SECONDS = 2.0
SECONDS_PER_WAIT_MINUTE = 60  # wait_minutes is in minutes (tests shorten the minute)
SWAP_POLL_SECONDS = 2.0
LOCK_TTL_SECONDS = 600  # extended while the swap runs; a holder that died frees it within this
TICK_RESULTS_KEPT = timedelta(hours=1)
RUNS_KEPT = 500  # per action


class ActionExists(Exception):
    """An action with this name exists already (HTTP 409)."""


class ActionUnavailable(Exception):
    """The action kind cannot run in this installation; the message says why."""


def _now() -> datetime:
    return timezone.now()


def worker_id() -> str:
    """host:pid, the form housekeeping parses to tell whether the process running a run is gone."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- reading ----------------------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_out(run: ActionRun) -> dict[str, Any]:
    """A run as the API returns it (CONTRACT.md: GET /api/actions/{name}/runs)."""
    return {
        "id": run.id,
        "action": run.action.name,
        "trigger": run.trigger,
        "scheduled_for": _iso(run.scheduled_for),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "outcome": run.outcome,
        "detail": run.detail,
        "swap": str(run.swap_id) if run.swap_id else None,
        "result": run.result or None,
    }


def action_out(action: ScheduledAction, *, last_run: ActionRun | None = None, with_last: bool = True) -> dict[str, Any]:
    """An action as the API and the dashboard see it, with its next run and its latest run."""
    if with_last and last_run is None:
        last_run = action.runs.select_related("action").order_by("-scheduled_for", "-id").first()
    return {
        "name": action.name,
        "cron": action.cron,
        "timezone": action.timezone,
        "action": action.action,
        "model": action.model or None,
        "service": action.service or None,
        "sweep": action.sweep or None,
        "when_locked": action.when_locked,
        "wait_minutes": action.wait_minutes,
        "missed": action.missed,
        "enabled": action.enabled,
        "next_run": _iso(action.next_run),
        "last_run": run_out(last_run) if last_run else None,
        "created_at": _iso(action.created_at),
        "updated_at": _iso(action.updated_at),
    }


def _push_action(action: ScheduledAction, *, deleted: bool = False) -> None:
    """Tell dashboards after commit, in the API's shape, as this transaction leaves the action."""
    if deleted:
        broadcast_on_commit({"kind": "action", "name": action.name, "deleted": True})
        return
    fresh = ScheduledAction.objects.filter(pk=action.pk).first()
    if fresh is not None:
        broadcast_on_commit({"kind": "action", **action_out(fresh)})


# --- writing ----------------------------------------------------------------------------------------------------------


def _schedule_next(action: ScheduledAction, *, now: datetime) -> None:
    action.next_run = action.occurrence_after(now) if action.enabled else None


def _wake_at(action: ScheduledAction) -> None:
    """Queue a tick for the action's next occurrence so it runs on time, not at the chain's next tick."""
    if action.next_run is not None:
        transaction.on_commit(partial(_enqueue_tick, run_after=action.next_run, chain=False))


def action_create(*, data: dict[str, Any], actor: str) -> ScheduledAction:
    """Create an action (ValidationError naming the field for bad input, ActionExists for a taken name)."""
    name = data.get("name") or ""
    with transaction.atomic():
        if ScheduledAction.objects.filter(name=name).exists():
            raise ActionExists(f"name: an action named {name!r} exists already")
        action = ScheduledAction(name=name, **{key: data[key] for key in ACTION_FIELDS if data.get(key) is not None})
        action.full_clean()
        _schedule_next(action, now=_now())
        try:
            with transaction.atomic():
                action.save()
        except IntegrityError as exc:
            raise ActionExists(f"name: an action named {name!r} exists already") from exc
        audit_record(actor=actor, action="action.create", target=name, detail=_audit_detail(action))
        _push_action(action)
        _wake_at(action)
    return action


def action_update(*, action: ScheduledAction, data: dict[str, Any], actor: str) -> ScheduledAction:
    """Change the fields given (None leaves a field as it is); the next run is worked out again from now."""
    with transaction.atomic():
        action = ScheduledAction.objects.select_for_update().get(pk=action.pk)
        for key in ACTION_FIELDS:
            if key in data and data[key] is not None:
                setattr(action, key, data[key])
        # Changing the kind drops the arguments the new kind does not take.
        if action.action != ActionKind.SWAP and "model" not in _given(data):
            action.model = ""
        if action.action != ActionKind.RESTART and "service" not in _given(data):
            action.service = ""
        if action.action != ActionKind.SWEEP and "sweep" not in _given(data):
            action.sweep = ""
        action.full_clean()
        _schedule_next(action, now=_now())
        action.save()
        audit_record(actor=actor, action="action.update", target=action.name, detail=_audit_detail(action))
        _push_action(action)
        _wake_at(action)
    return action


def _given(data: dict[str, Any]) -> set[str]:
    return {key for key, value in data.items() if value is not None}


def action_saved(*, action: ScheduledAction, actor: str, created: bool) -> ScheduledAction:
    """After an edit elsewhere (the admin form, already validated): work out the next run, audit and tell dashboards."""
    with transaction.atomic():
        _schedule_next(action, now=_now())
        action.save()
        audit_record(
            actor=actor,
            action="action.create" if created else "action.update",
            target=action.name,
            detail=_audit_detail(action),
        )
        _push_action(action)
        _wake_at(action)
    return action


def action_set_enabled(*, action: ScheduledAction, enabled: bool, actor: str) -> ScheduledAction:
    """Pause (no further runs) or resume (the next occurrence from now on; nothing missed while paused runs)."""
    return action_update(action=action, data={"enabled": enabled}, actor=actor)


def action_delete(*, action: ScheduledAction, actor: str) -> None:
    """Delete an action and its run history."""
    with transaction.atomic():
        audit_record(actor=actor, action="action.delete", target=action.name, detail=_audit_detail(action))
        _push_action(action, deleted=True)
        action.delete()


def _audit_detail(action: ScheduledAction) -> dict[str, Any]:
    return {
        "cron": action.cron,
        "timezone": action.timezone,
        "action": action.action,
        "argument": action.argument,
        "when_locked": action.when_locked,
        "wait_minutes": action.wait_minutes,
        "missed": action.missed,
        "enabled": action.enabled,
    }


def action_run_now(*, action: ScheduledAction, actor: str) -> ActionRun:
    """Run an action now, whatever its schedule (also when paused); the run is queued after commit."""
    with transaction.atomic():
        run = ActionRun.objects.create(action=action, trigger=RunTrigger.MANUAL, scheduled_for=_now())
        audit_record(actor=actor, action="action.run_now", target=action.name, detail={"run": run.id})
        _push_action(action)
        transaction.on_commit(partial(_enqueue_run, run.id))
    return run


# --- the tick: claiming due occurrences -------------------------------------------------------------------------------


def _enqueue_run(run_id: int) -> None:
    from actions.tasks import action_run_execute

    action_run_execute.enqueue(run_id)


def _enqueue_tick(*, run_after: datetime | None, chain: bool) -> None:
    from actions.tasks import actions_tick

    task = actions_tick.using(run_after=run_after) if run_after is not None else actions_tick
    task.enqueue(chain)


def _occurrences_between(action: ScheduledAction, start: datetime, end: datetime, *, cap: int = 1000) -> int:
    """How many occurrences fall in [start, end] (counted up to `cap`)."""
    count, moment = 0, start - timedelta(microseconds=1)
    while count < cap:
        moment = action.occurrence_after(moment)
        if moment > end:
            break
        count += 1
    return count


def occurrence_claim(*, action: ScheduledAction, now: datetime) -> ActionRun | None:
    """Handle the due occurrence(s) of one action exactly once: the run (queued or skipped), or None when another
    worker claimed them first. `action` is the row as read; its `next_run` must have passed."""
    due = action.next_run
    if due is None or due > now:
        return None
    latest = action.occurrence_at_or_before(now)
    passed = _occurrences_between(action, due, now)
    late = (now - due).total_seconds() > settings.ACTIONS_MISSED_AFTER_SECONDS
    missed = passed > 1 or late
    following = action.occurrence_after(now)
    detail = ""
    if missed:
        count = f"{passed}{'+' if passed >= 1000 else ''} occurrence{'s' if passed != 1 else ''}"
        detail = f"missed {count} since {due.isoformat()} (Spark Control was not running or was busy); "
        detail += "running the latest once" if action.missed == MissedPolicy.RUN_LATEST else "skipped by policy"
    try:
        with transaction.atomic():
            won = ScheduledAction.objects.filter(pk=action.pk, enabled=True, next_run=due).update(
                next_run=following, updated_at=now
            )
            if not won:
                return None
            if missed and action.missed == MissedPolicy.SKIP:
                run = ActionRun.objects.create(
                    action=action,
                    scheduled_for=latest,
                    outcome=RunOutcome.SKIPPED,
                    detail=detail,
                    finished_at=now,
                )
                audit_record(
                    actor=action.holder,
                    action="action.skipped",
                    target=action.name,
                    detail={"run": run.id, "scheduled_for": latest.isoformat(), "why": detail},
                )
            else:
                run = ActionRun.objects.create(action=action, scheduled_for=latest, detail=detail)
                transaction.on_commit(partial(_enqueue_run, run.id))
            action.next_run = following
            _push_action(action)
            transaction.on_commit(partial(_enqueue_tick, run_after=following, chain=False))
    except IntegrityError:
        return None  # the unique (action, scheduled_for): someone else inserted this occurrence's run
    return run


def actions_due_claim(*, now: datetime | None = None) -> list[ActionRun]:
    """Claim every due occurrence of every enabled action; returns the runs this caller claimed."""
    now = now or _now()
    claimed = []
    for action in ScheduledAction.objects.filter(enabled=True, next_run__lte=now):
        run = occurrence_claim(action=action, now=now)
        if run is not None:
            claimed.append(run)
    return claimed


def tick_lease_claim(*, now: datetime, next_due: datetime, claimer: str) -> bool:
    """Claim the chain's period (one conditional UPDATE); True when this caller won it."""
    TickLease.objects.bulk_create(
        [TickLease(pk=TickLease.SINGLETON_ID, next_due=now - timedelta(days=1))], ignore_conflicts=True
    )
    return bool(
        TickLease.objects.filter(pk=TickLease.SINGLETON_ID, next_due__lte=now).update(
            next_due=next_due, claimed_at=now, claimed_by=claimer[:128]
        )
    )


def _chain_next(now: datetime) -> datetime:
    period = now + timedelta(seconds=settings.ACTIONS_TICK_SECONDS)
    soonest = (
        ScheduledAction.objects.filter(enabled=True, next_run__isnull=False)
        .order_by("next_run")
        .values_list("next_run", flat=True)
        .first()
    )
    if soonest is not None and soonest < period:
        return max(soonest, now + timedelta(seconds=0.5))
    return period


def actions_tick(*, chain: bool) -> str:
    """One tick: keep the chain going (when this tick is the chain's), tidy up, claim and queue the due runs."""
    now = _now()
    if chain:
        with transaction.atomic():
            next_due = _chain_next(now)
            if tick_lease_claim(now=now, next_due=next_due, claimer=f"{worker_id()}:{threading.current_thread().name}"):
                # Same transaction as the claim: a claimed period always has its successor queued.
                transaction.on_commit(partial(_enqueue_tick, run_after=next_due, chain=True))
            else:
                chain = False
        if chain:
            actions_reap_stale(now=now)
            _prune_tick_results(now=now)
            actions_runs_prune()
    runs = actions_due_claim(now=now)
    return f"{len(runs)} run(s) claimed" + (" (chain)" if chain else "")


def _prune_tick_results(*, now: datetime) -> None:
    from actions.tasks import actions_tick as tick_task

    tick_results_prune(task_path=tick_task.module_path, now=now, kept=TICK_RESULTS_KEPT)


def actions_runs_prune(*, keep: int = RUNS_KEPT) -> int:
    """Keep the newest `keep` runs of each action (finished ones beyond are deleted); returns how many went."""
    deleted = 0
    for action in ScheduledAction.objects.only("pk"):
        newest = action.runs.order_by("-scheduled_for", "-id").values_list("scheduled_for", flat=True)
        cutoff = newest[keep : keep + 1].first()
        if cutoff is not None:
            old = action.runs.filter(scheduled_for__lte=cutoff).exclude(outcome=RunOutcome.RUNNING)
            deleted += old.delete()[0]
    return deleted


def actions_schedule_start() -> None:
    """Call once when a serving process starts: mark runs of processes that stopped, and start the tick chain.

    Errors are logged, never raised: scheduled actions must not stop a server starting.
    """
    try:
        actions_reap_stale()
        lease = TickLease.objects.filter(pk=TickLease.SINGLETON_ID).first()
        now = _now()
        if lease is None or lease.next_due <= now + timedelta(seconds=1):
            _enqueue_tick(run_after=None, chain=True)
        else:
            # A chain is alive (another process, or this one before a restart): a watchdog just after its due time.
            _enqueue_tick(run_after=lease.next_due + timedelta(seconds=10), chain=True)
    except Exception:  # noqa: BLE001 - a database or task-backend problem must not stop the server starting
        logger.exception("could not start the scheduled actions")


def actions_schedule_revive(*, now: datetime | None = None) -> bool:
    """Queue a chain tick when the chain is overdue (its worker died mid-claim); True when one was queued."""
    now = now or _now()
    grace = timedelta(seconds=max(10.0, settings.ACTIONS_TICK_SECONDS))
    if TickLease.objects.filter(pk=TickLease.SINGLETON_ID, next_due__lt=now - grace).exists():
        _enqueue_tick(run_after=None, chain=True)
        return True
    return False


# --- housekeeping -----------------------------------------------------------------------------------------------------


def _run_interrupt(*, run: ActionRun, why: str) -> bool:
    """Record a running run as failed (interrupted) unless it moved on; free the swap lock it held."""
    from coordination.services import lock_release_held_by

    with transaction.atomic():
        won = ActionRun.objects.filter(
            pk=run.pk, outcome=RunOutcome.RUNNING, heartbeat_at=run.heartbeat_at, worker=run.worker
        ).update(outcome=RunOutcome.FAILED, detail=why, finished_at=_now())
        if not won:
            return False
        audit_record(
            actor=run.action.holder, action="action.interrupted", target=run.action.name, detail={"run": run.id}
        )
        if run.action.action == ActionKind.SWAP:
            try:
                lock_release_held_by(holder=run.action.holder, actor=run.action.holder)
            except Exception:  # noqa: BLE001 - someone else holds it now: not this run's to free
                pass
        _push_action(run.action)
    return True


def actions_reap_gone_workers(*, gone: Callable[[str], bool]) -> list[ActionRun]:
    """Record running runs whose process is known to be gone (`gone(worker)`) as interrupted, at once."""
    reaped = []
    for run in ActionRun.objects.filter(outcome=RunOutcome.RUNNING).exclude(worker="").select_related("action"):
        if gone(run.worker) and _run_interrupt(run=run, why=f"{INTERRUPTED} ({run.worker})"):
            reaped.append(run)
    return reaped


def actions_reap_stale(*, now: datetime | None = None) -> list[ActionRun]:
    """Record running runs whose heartbeat went stale, or that no worker started, as interrupted."""
    now = now or _now()
    stale_after = timedelta(seconds=settings.SPARKCONTROL.get("HEARTBEAT_STALE_SECONDS", 30))
    queued_after = timedelta(seconds=settings.SPARKCONTROL.get("QUEUED_STALE_SECONDS", 300))
    reaped = []
    for run in ActionRun.objects.filter(outcome=RunOutcome.RUNNING).select_related("action"):
        if run.heartbeat_at is None:
            if run.created_at >= now - queued_after:
                continue
            why = f"{INTERRUPTED} (no worker started it within {int(queued_after.total_seconds())} s)"
        elif run.heartbeat_at < now - stale_after:
            why = f"{INTERRUPTED} (last heartbeat {run.heartbeat_at.isoformat()})"
        else:
            continue
        if _run_interrupt(run=run, why=why):
            reaped.append(run)
    return reaped


# --- running ----------------------------------------------------------------------------------------------------------


@contextmanager
def _heartbeat(run_id: int) -> Iterator[None]:
    """Beat for the run every few seconds from a thread of its own while the body runs (which may block for long)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(HEARTBEAT_SECONDS):
                ActionRun.objects.filter(pk=run_id, outcome=RunOutcome.RUNNING).update(heartbeat_at=_now())
        except Exception:  # noqa: BLE001 - a missed beat is only a beat
            logger.exception("heartbeat of action run %s failed", run_id)
        finally:
            close_old_connections()

    thread = threading.Thread(target=beat, name=f"action-run-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=HEARTBEAT_SECONDS * 2)


def _run_start(run_id: int) -> ActionRun | None:
    now = _now()
    started = ActionRun.objects.filter(pk=run_id, outcome=RunOutcome.RUNNING, started_at__isnull=True).update(
        started_at=now, heartbeat_at=now, worker=worker_id()
    )
    if not started:
        return None
    run = ActionRun.objects.select_related("action").get(pk=run_id)
    audit_record(
        actor=run.action.holder,
        action="action.start",
        target=run.action.name,
        detail={"run": run.id, "kind": run.action.action, "argument": run.action.argument, "trigger": run.trigger},
    )
    _push_action(run.action)
    return run


def _run_note(run: ActionRun, detail: str, **fields: Any) -> None:
    """Update a running run's detail (and swap link) for whoever watches."""
    run.detail = detail
    for key, value in fields.items():
        setattr(run, key, value)
    ActionRun.objects.filter(pk=run.pk, outcome=RunOutcome.RUNNING).update(detail=detail, heartbeat_at=_now(), **fields)
    _push_action(run.action)


def _run_finish(run: ActionRun, outcome: str, detail: str, **fields: Any) -> ActionRun:
    with transaction.atomic():
        finished = ActionRun.objects.filter(pk=run.pk, outcome=RunOutcome.RUNNING).update(
            outcome=outcome, detail=detail, finished_at=_now(), **fields
        )
        if finished:
            audit_record(
                actor=run.action.holder,
                action=f"action.{outcome}",
                target=run.action.name,
                detail={"run": run.id, "detail": detail[:500], "swap": str(run.swap_id) if run.swap_id else None},
            )
            _push_action(run.action)
    try:
        run.refresh_from_db()
    except ActionRun.DoesNotExist:
        pass  # the action was deleted while it ran, its runs with it
    return run


def action_run_execute(*, run_id: int) -> ActionRun | None:
    """Carry one claimed run through (the "actions" task); None when it is not this worker's to run."""
    run = _run_start(run_id)
    if run is None:
        return None
    runner = RUNNERS[ActionKind(run.action.action)]
    claim_note = run.detail  # why a late occurrence ran (the missed-run policy), kept beside the outcome
    try:
        with _heartbeat(run.id):
            outcome, detail = runner(run)
    except ActionUnavailable as exc:
        outcome, detail = RunOutcome.FAILED, str(exc)
    except Exception as exc:  # noqa: BLE001 - a run that breaks is recorded as failed, with why
        logger.exception("scheduled action %s (run %s) failed", run.action.name, run.id)
        outcome, detail = RunOutcome.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
    return _run_finish(run, outcome, f"{detail} ({claim_note})" if claim_note else detail)


# swap ----------------------------------------------------------------------------------------------------------------


def _lock_take(run: ActionRun) -> tuple[str | None, str]:
    """Take the swap lock as the action's holder, honouring when_locked: (token, "") or (None, why it skipped)."""
    from coordination.services import LockHeld, lock_acquire, lock_release_held_by

    action = run.action
    deadline = time.monotonic() + (
        action.wait_minutes * SECONDS_PER_WAIT_MINUTE if action.when_locked == WhenLocked.WAIT else 0
    )
    waiting_noted = False
    while True:
        try:
            grant, _ = lock_acquire(holder=action.holder, ttl_seconds=LOCK_TTL_SECONDS, actor=action.holder)
            return grant.token, ""
        except LockHeld as held:
            others = ActionRun.objects.filter(action=action, outcome=RunOutcome.RUNNING).exclude(pk=run.pk)
            if held.holder == action.holder and not others.exists():
                # This action's own hold from a run that did not finish (its token is gone): free it and retry.
                lock_release_held_by(holder=action.holder, actor=action.holder)
                continue
            why = f"the swap lock is held by {held.holder!r} (until {held.expires_at.isoformat()})"
            if time.monotonic() >= deadline:
                if action.when_locked == WhenLocked.WAIT:
                    return None, f"{why}; waited {action.wait_minutes} min"
                return None, why
            if not waiting_noted:
                _run_note(run, f"waiting up to {action.wait_minutes} min: {why}")
                waiting_noted = True
            time.sleep(LOCK_POLL_SECONDS)


def _run_swap(run: ActionRun) -> tuple[str, str]:
    from coordination.services import LockHeld, lock_acquire, lock_release
    from swaps.models import SwapState
    from swaps.services import SwapRefused, swap_request

    action = run.action
    token, why = _lock_take(run)
    if token is None:
        return RunOutcome.SKIPPED, why
    try:
        try:
            swap = swap_request(model_key=action.model, dry_run=False, actor=action.holder, lock_token=token)
        except SwapRefused as exc:
            if exc.status == 409:
                return RunOutcome.SKIPPED, f"another swap is active ({exc.extra.get('active_swap')})"
            return RunOutcome.FAILED, f"the swap was refused ({exc.status}): {exc}"
        _run_note(run, f"swapping to {action.model} (swap {swap.id})", swap=swap)
        extended = time.monotonic()
        while True:
            swap.refresh_from_db(fields=["state", "error", "started_at", "finished_at"])
            if swap.is_terminal:
                break
            if time.monotonic() - extended > LOCK_TTL_SECONDS / 2:
                try:
                    lock_acquire(holder=action.holder, ttl_seconds=LOCK_TTL_SECONDS, token=token, actor=action.holder)
                    extended = time.monotonic()
                except LockHeld:
                    logger.warning("the swap lock of %s was taken while its swap ran", action.name)
            time.sleep(SWAP_POLL_SECONDS)
        if swap.state == SwapState.READY:
            took = f" in {swap.duration_s:.0f} s" if swap.duration_s is not None else ""
            return RunOutcome.OK, f"swapped to {action.model}{took} (swap {swap.id})"
        error = f": {swap.error}" if swap.error else ""
        return RunOutcome.FAILED, f"the swap to {action.model} ended {swap.state}{error} (swap {swap.id})"
    finally:
        try:
            lock_release(token=token, force=False, actor=action.holder)
        except Exception:  # noqa: BLE001 - taken from us (forced): nothing of ours to release
            logger.warning("could not release the swap lock held by %s", action.holder)


# warm ----------------------------------------------------------------------------------------------------------------


def _run_warm(run: ActionRun) -> tuple[str, str]:
    """One one-token chat completion to the served model through this process's own gateway.

    The credential is an inference-scope API token made for this request alone: its plain text lives only in this
    function's memory, it expires by itself shortly after the time limit, and it is deleted when the request ends.
    """
    import httpx

    from accounts.models import APIToken
    from accounts.tokens import apitoken_create, token_epoch_bump
    from swaps.selectors import serving_get

    serving = serving_get()
    if serving is None or not serving.served_model_name:
        return RunOutcome.FAILED, "nothing is served: there is no model to warm"
    timeout = float(settings.ACTIONS_WARM_TIMEOUT_SECONDS)
    token, plain = apitoken_create(
        name=f"warm-{run.id}-{os.urandom(4).hex()}"[:64],
        scope="inference",
        created_by=run.action.holder,
        expires_at=_now() + timedelta(seconds=timeout + 60),
    )
    url = settings.ACTIONS_GATEWAY_URL.rstrip("/") + "/v1/chat/completions"
    body = {
        "model": serving.served_model_name,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1,
        "stream": False,
    }
    started = time.monotonic()
    try:
        response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {plain}"}, timeout=timeout)
    except httpx.HTTPError as exc:
        return RunOutcome.FAILED, f"the warm-up request to {url} failed: {type(exc).__name__}: {exc}"
    finally:
        with transaction.atomic():
            APIToken.objects.filter(pk=token.pk).delete()
            token_epoch_bump()
    took = time.monotonic() - started
    if response.status_code != 200:
        return RunOutcome.FAILED, f"{serving.served_model_name} answered {response.status_code}: {response.text[:300]}"
    return RunOutcome.OK, f"{serving.served_model_name} answered a one-token completion in {took:.1f} s"


# restart -------------------------------------------------------------------------------------------------------------


def service_restart_call(*, key: str, actor: str) -> tuple[str, str]:
    """Restart a service's container (cluster's restart, with its own refusals) and wait for its probe to pass."""
    from cluster.models import RestartState
    from cluster.restarts import RestartRefused, service_restart_request

    try:
        restart = service_restart_request(key=key, requested_by=actor)
    except RestartRefused as exc:
        if exc.status == 423:  # a GPU service while someone holds the swap lock: their work goes first
            return RunOutcome.SKIPPED, f"restart of {key!r} not started: {exc}"
        raise ActionUnavailable(f"restart refused: {exc}") from None
    limit = settings.SERVICE_RESTART_STOP_SECONDS + settings.SERVICE_RESTART_WAIT_SECONDS + 60
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        restart.refresh_from_db()
        if restart.state == RestartState.UP:
            down = f", down {restart.downtime_s:.1f} s" if restart.downtime_s is not None else ""
            return RunOutcome.OK, f"{key} restarted (restart {restart.pk}{down})"
        if restart.state == RestartState.FAILED:
            return RunOutcome.FAILED, f"restart {restart.pk} of {key} failed: {restart.error}"
        time.sleep(1.0)
    return RunOutcome.FAILED, f"restart {restart.pk} of {key} did not finish within {limit:.0f} s"


def _run_restart(run: ActionRun) -> tuple[str, str]:
    return service_restart_call(key=run.action.service, actor=run.action.holder)


# sweep ---------------------------------------------------------------------------------------------------------------


def _run_sweep(run: ActionRun) -> tuple[str, str]:
    from cluster.schedule import sweep_timeout
    from cluster.services import cluster_settings_get
    from cluster.sweeps import sweep_run

    sweep = run.action.sweep
    report = sweep_run(sweep=sweep, timeout=sweep_timeout(sweep=sweep, cluster=cluster_settings_get()))
    counts = report.counts()
    ActionRun.objects.filter(pk=run.pk).update(result=counts)
    summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "nothing probed"
    return RunOutcome.OK, f"{sweep} sweep: {summary} in {report.duration_s:.2f} s"


RUNNERS: dict[ActionKind, Callable[[ActionRun], tuple[str, str]]] = {
    ActionKind.SWAP: _run_swap,
    ActionKind.WARM: _run_warm,
    ActionKind.RESTART: _run_restart,
    ActionKind.SWEEP: _run_sweep,
}
