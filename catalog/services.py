"""Writes to the catalog: create, change knobs, import and export `models.yaml`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from catalog.models import ModelEntry

ENTRY_FIELDS = {"key", "name", "repo", "local_path", "served_model_name", "nodes", "vllm_args", "knobs", "enabled"}


class CatalogImportError(Exception):
    """An import that was refused as a whole; `errors` lists every problem found (entry and field)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class ImportReport:
    """What an import did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _apply(entry: ModelEntry, data: dict[str, Any]) -> None:
    knobs = data.get("knobs") or {}
    if not isinstance(knobs, dict):
        raise ValidationError({"knobs": "knobs must be a mapping"})
    unknown = set(knobs) - set(ModelEntry.KNOB_FIELDS)
    if unknown:
        raise ValidationError({"knobs": f"unknown knob(s): {', '.join(sorted(map(str, unknown)))}"})
    for name in ("name", "repo", "local_path", "served_model_name", "nodes", "vllm_args", "enabled"):
        if name in data:
            value = data[name]
            if name in ("repo", "local_path", "served_model_name") and value is None:
                value = ""
            setattr(entry, name, value)
    for knob, value in knobs.items():
        setattr(entry, knob, value)


def _field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    if hasattr(exc, "error_dict"):
        return [(name, message) for name, errors in exc.message_dict.items() for message in errors]
    return [("__all__", message) for message in exc.messages]


def model_create(*, data: dict[str, Any]) -> ModelEntry:
    """Create a catalog entry after full validation; raises ValidationError naming the fields."""
    entry = ModelEntry(key=data.get("key", ""))
    _apply(entry, data)
    if not entry.name:
        entry.name = entry.key
    entry.full_clean()
    entry.save()
    return entry


def model_update_knobs(*, entry: ModelEntry, knobs: dict[str, Any], vllm_args: list[str] | None) -> ModelEntry:
    """Change knobs and, when given, the vLLM flags of an entry."""
    data: dict[str, Any] = {"knobs": knobs}
    if vllm_args is not None:
        data["vllm_args"] = vllm_args
    _apply(entry, data)
    entry.full_clean()
    entry.save()
    return entry


def catalog_parse_yaml(*, text: str) -> list[dict[str, Any]]:
    """The entries of a models.yaml document (`models:` list), or CatalogImportError."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogImportError([f"not valid YAML: {exc}"]) from exc
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise CatalogImportError(["the file must be a mapping with a 'models' list"])
    return document["models"]


def catalog_import(*, entries: list[Any]) -> ImportReport:
    """Validate every entry, report every error, and write nothing unless all of them are valid.

    Importing the same entries twice changes nothing the second time.
    """
    errors: list[str] = []
    planned: list[tuple[ModelEntry, bool]] = []
    seen: set[str] = set()
    existing = {entry.key: entry for entry in ModelEntry.objects.all()}
    for index, data in enumerate(entries, start=1):
        label = f"entry {index}"
        if not isinstance(data, dict):
            errors.append(f"{label}: must be a mapping")
            continue
        key = data.get("key")
        if isinstance(key, str) and key:
            label = f"entry {index} ({key})"
        unknown = set(data) - ENTRY_FIELDS
        if unknown:
            errors.append(f"{label}: unknown field(s): {', '.join(sorted(map(str, unknown)))}")
            continue
        if not isinstance(key, str) or not key:
            errors.append(f"{label}: key: this field is required")
            continue
        if key in seen:
            errors.append(f"{label}: key: {key!r} appears more than once in the file")
            continue
        seen.add(key)
        current = existing.get(key)
        entry = ModelEntry.objects.get(pk=current.pk) if current else ModelEntry(key=key)
        before = {f: getattr(entry, f) for f in _compared_fields()} if current else None
        try:
            _apply(entry, data)
            if not entry.name:
                entry.name = key
            entry.full_clean()
        except (ValidationError, TypeError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                errors.extend(f"{label}: {name}: {message}" for name, message in _field_errors(exc))
            else:
                errors.append(f"{label}: {exc}")
            continue
        after = {f: getattr(entry, f) for f in _compared_fields()}
        planned.append((entry, before is None or before != after))
    if errors:
        raise CatalogImportError(errors)
    report = ImportReport()
    with transaction.atomic():
        for entry, changed in planned:
            if entry.pk is None:
                entry.save()
                report.created.append(entry.key)
            elif changed:
                entry.save()
                report.updated.append(entry.key)
            else:
                report.unchanged.append(entry.key)
    return report


def _compared_fields() -> list[str]:
    return [f.name for f in ModelEntry._meta.concrete_fields if f.name not in ("id", "created_at", "updated_at")]


def catalog_export() -> str:
    """The whole catalog as a models.yaml document that `catalog_import` accepts unchanged."""
    models = []
    for entry in ModelEntry.objects.order_by("key"):
        item: dict[str, Any] = {"key": entry.key, "name": entry.name}
        item["local_path" if entry.is_local else "repo"] = entry.source
        if entry.served_model_name:
            item["served_model_name"] = entry.served_model_name
        item["nodes"] = entry.nodes
        if entry.vllm_args:
            item["vllm_args"] = list(entry.vllm_args)
        knobs = {k: v for k, v in entry.knobs.items() if v is not None}
        if knobs:
            item["knobs"] = knobs
        item["enabled"] = entry.enabled
        models.append(item)
    return yaml.safe_dump({"models": models}, sort_keys=False, allow_unicode=True)


class DiskDeleteRefused(Exception):
    """A disk delete that must not happen (a local model, or the model being served)."""


_disk_deleter: Callable[..., str] | None = None


def register_disk_deleter(deleter: Callable[..., str]) -> None:
    """The swaps app provides the remote delete (it owns SSH to the nodes); the catalog only decides policy."""
    global _disk_deleter
    _disk_deleter = deleter


def model_disk_delete(*, entry: ModelEntry, actor: str) -> str:
    """Delete a repo model's HF cache files on the nodes. Local models are never deleted from disk."""
    if entry.is_local:
        raise DiskDeleteRefused("local models are never deleted from disk")
    if _disk_deleter is None:
        raise DiskDeleteRefused("no remote deleter is installed")
    return _disk_deleter(entry=entry, actor=actor)
