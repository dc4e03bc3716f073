"""Catalog routes: list, create, change knobs and launcher fields."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Router, Status
from ninja.errors import HttpError

from accounts.auth import admin_auth, read_auth
from audit.services import audit_record
from catalog.models import ModelEntry
from catalog.schemas import KnobsIn, LauncherFieldsIn, ModelIn, ModelOut
from catalog.selectors import model_container_env, model_get, model_list, model_secret_names
from catalog.services import env_split, model_create, model_update

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
        "image": entry.image,
        "mods": list(entry.mods or []),
        "env": model_container_env(entry),
        "secret_names": model_secret_names(entry),
        "launcher_args": list(entry.launcher_flags or []),
    }


def _launcher_input(payload: LauncherFieldsIn) -> tuple[dict[str, Any], dict[str, str | None]]:
    """The launcher fields given in a request, as catalog fields, and the secret variables to set or remove."""
    data: dict[str, Any] = {}
    secrets: dict[str, str | None] = dict(payload.secrets or {})
    pairs = (("env", "container_env"), ("launcher_args", "launcher_flags"))
    for contract_name, catalog_name in pairs:
        if getattr(payload, contract_name) is not None and getattr(payload, catalog_name) is not None:
            raise ValidationError({contract_name: f"give {contract_name} or {catalog_name}, not both"})
    if payload.image is not None:
        data["image"] = payload.image
    if payload.mods is not None:
        data["mods"] = payload.mods
    env = payload.env if payload.env is not None else payload.container_env
    if env is not None:
        plain, secret = env_split(env)
        overlap = sorted(set(secret) & set(secrets))
        if overlap:
            raise ValidationError({"secrets": f"{', '.join(overlap)} given both in env and in secrets"})
        data["container_env"] = plain
        secrets.update(secret)
    flags = payload.launcher_args if payload.launcher_args is not None else payload.launcher_flags
    if flags is not None:
        data["launcher_flags"] = flags
    return data, secrets


def _audit_detail(data: dict[str, Any], secrets: dict[str, str | None]) -> dict[str, Any]:
    """What an audit entry may say about a write: never a secret's value."""
    detail = {k: v for k, v in data.items() if k not in ("key",)}
    if secrets:
        detail["write_only_variables_changed"] = sorted(secrets)
    return detail


@router.get("/models", response=list[ModelOut], auth=read_auth)
def list_models(request: HttpRequest) -> list[dict]:
    """Every catalog entry. Secret container variables appear by name only (`secret_names`)."""
    return [model_out(entry) for entry in model_list()]


@router.post("/models", response={201: ModelOut}, auth=admin_auth)
def create_model(request: HttpRequest, payload: ModelIn) -> Status:
    """Create a catalog entry (admin scope). Exactly one of repo / local_path."""
    if model_get(key=payload.key) is not None:
        raise HttpError(409, f"key: a model with key {payload.key!r} already exists")
    launcher, secrets = _launcher_input(payload)
    data = payload.model_dump(exclude=set(LauncherFieldsIn.model_fields))
    data["knobs"] = {k: v for k, v in data["knobs"].items() if v is not None}
    data.update(launcher)
    entry = model_create(data=data, secrets={k: v for k, v in secrets.items() if v is not None})
    audit_record(actor=request.auth.name, action="catalog.create", target=entry.key)
    return Status(201, model_out(entry))


@router.put("/models/{key}/knobs", response=ModelOut, auth=admin_auth)
def update_knobs(request: HttpRequest, key: str, payload: KnobsIn) -> dict:
    """Change knobs, vLLM flags and, when given, launcher fields and secret variables (admin scope); flags Spark
    Control owns are refused."""
    entry = model_get(key=key)
    if entry is None:
        raise HttpError(404, f"no model with key {key!r}")
    launcher, secrets = _launcher_input(payload)
    data: dict[str, Any] = {"knobs": payload.knobs.model_dump(), **launcher}
    if payload.vllm_args is not None:
        data["vllm_args"] = payload.vllm_args
    entry = model_update(entry=entry, data=data, secrets=secrets)
    audit_record(actor=request.auth.name, action="catalog.knobs", target=entry.key, detail=_audit_detail(data, secrets))
    return model_out(entry)
