"""Coordination routes: the swap lock (/swap/lock) and the schedule registry (/schedule)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Header, Router, Status
from ninja.errors import HttpError

from accounts.auth import operate_auth, read_auth, require_force
from coordination import clock
from coordination.schemas import LockAcquireIn, LockGrantOut, LockHeldOut, LockStatusOut, ScheduleIn, ScheduleOut
from coordination.selectors import lock_status, schedule_list, schedule_view
from coordination.services import (
    LockHeld,
    LockTokenMismatch,
    lock_acquire,
    lock_release,
    schedule_delete,
    schedule_upsert,
)

router = Router(tags=["coordination"])

TOKEN_HEADER = "X-Swap-Lock-Token"


@router.post("/swap/lock", response={200: LockGrantOut, 201: LockGrantOut, 423: LockHeldOut}, auth=operate_auth)
def acquire_lock(
    request: HttpRequest, payload: LockAcquireIn, token: str | None = Header(default=None, alias=TOKEN_HEADER)
) -> Status:
    """Take the lock (201, with its token, shown this once) or extend it with its token (200); 423 if held."""
    try:
        grant, created = lock_acquire(
            holder=payload.holder, ttl_seconds=payload.ttl_seconds, token=token, actor=request.auth.name
        )
    except LockHeld as exc:
        return Status(423, {"detail": str(exc), "holder": exc.holder, "expires_at": exc.expires_at})
    return Status(201 if created else 200, grant)


@router.get("/swap/lock", response=LockStatusOut, auth=read_auth)
def get_lock(request: HttpRequest) -> dict:
    """Who holds the lock, until when, and its epoch; never the token."""
    return lock_status()


@router.delete("/swap/lock", response={204: None}, auth=operate_auth)
def release_lock(
    request: HttpRequest, force: bool = False, token: str | None = Header(default=None, alias=TOKEN_HEADER)
) -> Status:
    """Release with the token in X-Swap-Lock-Token, or `?force=true` (staff or admin scope); a free lock is 204."""
    if force:
        require_force(request.auth)
    try:
        lock_release(token=token, force=force, actor=request.auth.name)
    except LockTokenMismatch as exc:
        raise HttpError(403, str(exc)) from exc
    return Status(204, None)


@router.get("/schedule", response=list[ScheduleOut], auth=read_auth)
def list_schedule(request: HttpRequest) -> list[dict]:
    """Registered jobs, soonest first; `stale` when next_run is over a day in the past."""
    return schedule_list()


@router.post("/schedule", response={200: ScheduleOut, 201: ScheduleOut}, auth=operate_auth)
def put_schedule(request: HttpRequest, payload: ScheduleIn) -> Status:
    """Register a job (201) or replace the entry with this id (200)."""
    job, created = schedule_upsert(data=payload.model_dump(), actor=request.auth.name)
    return Status(201 if created else 200, schedule_view(job=job, at=clock.now()))


@router.delete("/schedule/{job_id}", response={204: None}, auth=operate_auth)
def delete_schedule(request: HttpRequest, job_id: str) -> Status:
    """Remove a registered job; 404 if there is none with this id."""
    if not schedule_delete(job_id=job_id, actor=request.auth.name):
        raise HttpError(404, f"no scheduled job with id {job_id!r}")
    return Status(204, None)
