"""Scheduled actions routes (/actions): read scope to read, admin scope to write."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.errors import HttpError

from accounts.auth import admin_auth, read_auth
from actions.models import ScheduledAction
from actions.schemas import ActionIn, ActionOut, ActionUpdateIn, RunAcceptedOut, RunOut
from actions.selectors import RUNS_MAX_LIMIT, action_get, action_last_runs, action_list, action_runs
from actions.services import (
    ActionExists,
    action_create,
    action_delete,
    action_out,
    action_run_now,
    action_update,
    run_out,
)

router = Router(tags=["actions"])


def _action(name: str) -> ScheduledAction:
    action = action_get(name=name)
    if action is None:
        raise HttpError(404, f"no scheduled action named {name!r}")
    return action


@router.get("/actions", response=list[ActionOut], auth=read_auth)
def list_actions(request: HttpRequest) -> list[dict]:
    """Every scheduled action with its next run and latest run, soonest first (paused ones last)."""
    actions = list(action_list())
    last = action_last_runs(actions=actions)
    return [action_out(action, last_run=last.get(action.pk), with_last=False) for action in actions]


@router.post("/actions", response={201: ActionOut}, auth=admin_auth)
def create_action(request: HttpRequest, payload: ActionIn) -> Status:
    """Create an action (201 with its next_run); 409 if the name exists; 422 naming the field."""
    try:
        action = action_create(data=payload.model_dump(), actor=request.auth.name)
    except ActionExists as exc:
        raise HttpError(409, str(exc)) from exc
    return Status(201, action_out(action))


@router.get("/actions/{name}", response=ActionOut, auth=read_auth)
def get_action(request: HttpRequest, name: str) -> dict:
    """One action with its next run and latest run."""
    return action_out(_action(name))


@router.put("/actions/{name}", response=ActionOut, auth=admin_auth)
def update_action(request: HttpRequest, name: str, payload: ActionUpdateIn) -> dict:
    """Change the fields given; the next run is worked out again from now. The name cannot change."""
    action = _action(name)
    data = payload.model_dump()
    if data.pop("name", None) not in (None, name):
        raise HttpError(422, "name: the name of an action cannot change (delete it and create another)")
    return action_out(action_update(action=action, data=data, actor=request.auth.name))


@router.delete("/actions/{name}", response={204: None}, auth=admin_auth)
def delete_action(request: HttpRequest, name: str) -> Status:
    """Delete an action and its run history."""
    action_delete(action=_action(name), actor=request.auth.name)
    return Status(204, None)


@router.post("/actions/{name}/run", response={202: RunAcceptedOut}, auth=admin_auth)
def run_action(request: HttpRequest, name: str) -> Status:
    """Run the action now (also when paused); 202 with the run's id."""
    run = action_run_now(action=_action(name), actor=request.auth.name)
    return Status(202, {"run": run.id})


@router.get("/actions/{name}/runs", response=list[RunOut], auth=read_auth)
def list_runs(
    request: HttpRequest,
    name: str,
    limit: int = Query(50, ge=1, le=RUNS_MAX_LIMIT),
    before: int | None = Query(None, ge=1),
) -> list[dict]:
    """The action's runs, newest first; `limit` (1-200, default 50) and `before` (a run id) page back."""
    return [run_out(run) for run in action_runs(action=_action(name), limit=limit, before=before)]
