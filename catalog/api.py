"""Catalog routes: list, create, change knobs."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Status
from ninja.errors import HttpError

from catalog.models import ModelEntry
from catalog.schemas import KnobsIn, ModelIn, ModelOut
from catalog.selectors import model_get, model_list
from catalog.services import model_create, model_update_knobs
from sparkcontrol.audit import audit_record
from sparkcontrol.auth import admin_auth, read_auth

router = Router(tags=["catalog"])


def model_out(entry: ModelEntry) -> dict:
    return {
        "key": entry.key,
        "name": entry.name,
        "repo": entry.repo or None,
        "local_path": entry.local_path or None,
        "local": entry.is_local,
        "served_model_name": entry.effective_served_name,
        "nodes": entry.nodes,
        "vllm_args": list(entry.vllm_args),
        "knobs": entry.knobs,
        "enabled": entry.enabled,
    }


@router.get("/models", response=list[ModelOut], auth=read_auth)
def list_models(request: HttpRequest) -> list[dict]:
    """Every catalog entry."""
    return [model_out(entry) for entry in model_list()]


@router.post("/models", response={201: ModelOut}, auth=admin_auth)
def create_model(request: HttpRequest, payload: ModelIn) -> Status:
    """Create a catalog entry (admin scope). Exactly one of repo / local_path."""
    if model_get(key=payload.key) is not None:
        raise HttpError(409, f"key: a model with key {payload.key!r} already exists")
    data = payload.model_dump()
    data["knobs"] = {k: v for k, v in data["knobs"].items() if v is not None}
    entry = model_create(data=data)
    audit_record(actor=request.auth.name, action="catalog.create", target=entry.key)
    return Status(201, model_out(entry))


@router.put("/models/{key}/knobs", response=ModelOut, auth=admin_auth)
def update_knobs(request: HttpRequest, key: str, payload: KnobsIn) -> dict:
    """Change knobs and vLLM flags (admin scope); flags Spark Control owns are refused."""
    entry = model_get(key=key)
    if entry is None:
        raise HttpError(404, f"no model with key {key!r}")
    entry = model_update_knobs(entry=entry, knobs=payload.knobs.model_dump(), vllm_args=payload.vllm_args)
    audit_record(actor=request.auth.name, action="catalog.knobs", target=entry.key, detail=payload.model_dump())
    return model_out(entry)
