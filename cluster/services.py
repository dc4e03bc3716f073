"""Writes to the topology: the cluster-settings row and the service list from the shipped file + overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from cluster.models import ClusterSettings, Service, ServiceKind, validate_link

BUILTIN_SERVICES_FILE = Path(__file__).with_name("builtin_services.yaml")
SERVICE_FIELDS = {
    "name",
    "kind",
    "node",
    "url",
    "port",
    "health_path",
    "expected_status",
    "models",
    "read_only",
    "max_in_flight",
    "container",
    "gpu",
    "link",
}
CONTAINER_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ServicesConfigError(Exception):
    """A services file that was refused; every problem names the file, the entry and the field."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def cluster_settings_get() -> ClusterSettings:
    """The cluster-settings row, created on first use from the environment's initial values."""
    row = ClusterSettings.objects.filter(pk=1).first()
    if row is not None:
        return row
    initial = settings.SPARKCONTROL
    row, _ = ClusterSettings.objects.get_or_create(
        pk=1,
        defaults={
            "vllm_port": initial["VLLM_PORT"] if initial["VLLM_PORT"] != ClusterSettings.DEFAULT_VLLM_PORT else None,
            "vllm_container": ""
            if initial["VLLM_CONTAINER"] == ClusterSettings.DEFAULT_CONTAINER
            else initial["VLLM_CONTAINER"],
            "disabled_services": ",".join(initial["DISABLED_SERVICES"]),
            "swap_timeout_s": initial["SWAP_TIMEOUT_SECONDS"],
        },
    )
    return row


def _load_file(path: Path, *, required: bool) -> tuple[dict[str, Any], list[str]]:
    if not path.exists():
        return ({}, [f"{path}: file not found"] if required else [])
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return {}, [f"{path}: cannot read: {exc}"]
    if not isinstance(document, dict) or not isinstance(document.get("services", {}), dict):
        return {}, [f"{path}: must be a mapping with a 'services' mapping of key -> fields"]
    return document.get("services") or {}, []


def _is_link(value: str) -> bool:
    try:
        validate_link(value)
    except ValidationError:
        return False
    return True


def _validate_entry(path: Path, key: Any, fields: Any) -> list[str]:
    where = f"{path}: service {key!r}"
    if not isinstance(key, str) or not KEY_RE.match(key):
        return [f"{where}: key must be lower-case letters, digits, '-' or '_' (1-64 characters)"]
    if not isinstance(fields, dict):
        return [f"{where}: must be a mapping of fields"]
    errors = [f"{where}: unknown field {name!r}" for name in fields if name not in SERVICE_FIELDS]
    checks = {
        "name": lambda v: isinstance(v, str) and 0 < len(v) <= 128,
        "kind": lambda v: v in ServiceKind.values,
        "node": lambda v: isinstance(v, str) and len(v) <= 64,
        "url": lambda v: isinstance(v, str) and urlsplit(v).scheme in ("http", "https") and bool(urlsplit(v).hostname),
        "port": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535,
        "health_path": lambda v: isinstance(v, str) and v.startswith("/") and len(v) <= 256,
        "expected_status": lambda v: isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599,
        "models": lambda v: isinstance(v, list) and all(isinstance(m, str) and m for m in v),
        "read_only": lambda v: isinstance(v, bool),
        "max_in_flight": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10000,
        "container": lambda v: isinstance(v, str) and bool(CONTAINER_RE.match(v)),
        "gpu": lambda v: isinstance(v, bool),
        "link": lambda v: isinstance(v, str) and len(v) <= 512 and _is_link(v),
    }
    hints = {
        "kind": f"one of {', '.join(ServiceKind.values)}",
        "url": "an http:// or https:// URL",
        "port": "a whole number 1-65535",
        "health_path": "a path starting with /",
        "expected_status": "an HTTP status 100-599",
        "models": "a list of model names",
        "read_only": "true or false",
        "max_in_flight": "a whole number >= 0",
        "container": "a docker container name (letters, digits, '_', '.', '-'; up to 128)",
        "gpu": "true or false",
        "link": "an http:// or https:// URL",
    }
    for name, check in checks.items():
        if name in fields and not check(fields[name]):
            errors.append(f"{where}: field {name!r}: {fields[name]!r} is not {hints.get(name, 'valid')}")
    return errors


def services_load(*, overrides_path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The merged service definitions (built-in, then overrides field by field), or ServicesConfigError."""
    builtin, errors = _load_file(BUILTIN_SERVICES_FILE, required=True)
    path = overrides_path or Path(settings.SPARKCONTROL["SERVICES_OVERRIDES"])
    overrides, override_errors = _load_file(path, required=False)
    errors += override_errors
    for source_path, entries in ((BUILTIN_SERVICES_FILE, builtin), (path, overrides)):
        for key, fields in entries.items():
            errors += _validate_entry(source_path, key, fields)
    merged: dict[str, dict[str, Any]] = {}
    for key, fields in builtin.items():
        merged[key] = {**fields, "source": "builtin"}
    for key, fields in overrides.items():
        if key in merged:
            merged[key] = {**merged[key], **fields}
        else:
            merged[key] = {**fields, "source": "override"}
            missing = [name for name in ("name", "kind") if name not in fields]
            errors += [f"{path}: service {key!r}: field {name!r} is required for a new service" for name in missing]
        if key == "vllm" and merged[key].get("container"):
            errors.append(f"{path}: service 'vllm': field 'container': the head vLLM is changed by swaps, not restarts")
        if merged[key].get("kind") == ServiceKind.VLLM and key != "vllm":
            merged[key]["read_only"] = True  # a second vLLM is monitored, never swapped
        if not merged[key].get("url") and not merged[key].get("port") and key != "vllm":
            errors.append(f"{path}: service {key!r}: give a url or a port")
    if errors:
        raise ServicesConfigError(errors)
    return merged


def services_sync(*, overrides_path: Path | None = None) -> list[Service]:
    """Bring the Service rows in line with the files. On any error nothing changes: the last good set stays.

    Two processes starting together may both insert a new service; the loser retries once and then updates.
    """
    try:
        with transaction.atomic():
            return _services_sync(overrides_path)
    except IntegrityError:
        with transaction.atomic():
            return _services_sync(overrides_path)


def _services_sync(overrides_path: Path | None) -> list[Service]:
    """The body of services_sync, inside its transaction.

    The admin's `enabled` flag and gateway cap belong to people, so an existing row keeps them unless the file
    sets a cap explicitly.
    """
    merged = services_load(overrides_path=overrides_path)
    rows = []
    for key, spec in merged.items():
        row = Service.objects.filter(key=key).first() or Service(key=key)
        row.name = spec["name"]
        row.kind = spec["kind"]
        row.node = spec.get("node", "")
        row.url = spec.get("url", "")
        row.port = spec.get("port")
        row.health_path = spec.get("health_path", "")
        row.expected_status = spec.get("expected_status", 200)
        if "models" in spec or key != "vllm":
            # The head vLLM's model is runtime state, set by swaps; the files own every other service's list.
            row.models_served = spec.get("models", [])
        row.read_only = bool(spec.get("read_only", False))
        row.container = spec.get("container", "")
        row.gpu = bool(spec.get("gpu", False))
        row.link = spec.get("link", "")
        row.source = spec["source"]
        if "max_in_flight" in spec and (row.pk is None or spec["source"] == "override"):
            row.max_in_flight = spec["max_in_flight"]
        row.full_clean()
        row.save()
        rows.append(row)
    Service.objects.exclude(key__in=merged.keys()).delete()
    return rows
