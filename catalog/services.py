"""Writes to the catalog: create, change knobs and launcher fields, set secrets, import and export `models.yaml`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from catalog.models import ModelEntry, ModelSecret
from catalog.validators import validate_env_name, validate_env_value

SIMPLE_FIELDS = ("name", "repo", "local_path", "served_model_name", "nodes", "vllm_args", "enabled")
# Other names the same fields go by: the API contract's (`env`, `launcher_args`) beside the model's.
FIELD_ALIASES = {"env": "container_env", "launcher_args": "launcher_flags"}
ENTRY_FIELDS = {"key", *SIMPLE_FIELDS, "knobs", *ModelEntry.LAUNCHER_FIELDS, *FIELD_ALIASES}


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
    """Set the given fields on the entry; every problem of the data's shape is raised at the end, together, after
    what could be applied was (so a full_clean can still report the other fields' problems)."""
    problems: dict[str, list[str]] = {}
    knobs = data.get("knobs") or {}
    if not isinstance(knobs, dict):
        problems.setdefault("knobs", []).append("knobs must be a mapping")
        knobs = {}
    unknown = set(knobs) - set(ModelEntry.KNOB_FIELDS)
    if unknown:
        problems.setdefault("knobs", []).append(f"unknown knob(s): {', '.join(sorted(map(str, unknown)))}")
        knobs = {knob: value for knob, value in knobs.items() if knob not in unknown}
    for alias, name in FIELD_ALIASES.items():
        if alias in data and name in data:
            problems.setdefault(name, []).append(f"give {name} or {alias}, not both")
    for name in (*SIMPLE_FIELDS, *ModelEntry.LAUNCHER_FIELDS):
        alias = next((a for a, n in FIELD_ALIASES.items() if n == name), None)
        if name in data or (alias is not None and alias in data):
            value = data[name] if name in data else data[alias]
            if name in ("repo", "local_path", "served_model_name", "image") and value is None:
                value = ""
            if name in ("mods", "launcher_flags", "vllm_args") and value is None:
                value = []
            if name == "container_env" and value is None:
                value = {}
            setattr(entry, name, value)
    for knob, value in knobs.items():
        setattr(entry, knob, value)
    if problems:
        raise ValidationError(problems)


def _check_secrets(secrets: dict[str, str | None], *, removing_allowed: bool) -> None:
    """Names and values of secret variables, every problem named under `secrets`."""
    if not isinstance(secrets, dict):
        raise ValidationError({"secrets": "secrets must be a mapping of NAME to value"})
    problems: list[str] = []
    for name, value in secrets.items():
        try:
            validate_env_name(name, secret=True)
            if value is None:
                if not removing_allowed:
                    raise ValidationError("a secret needs a value")
            else:
                validate_env_value(value, secret=True)
                if not value:
                    raise ValidationError("a secret needs a value (null removes it)")
        except ValidationError as exc:
            # The message never carries the value.
            problems.append(f"{name}: {exc.messages[0]}")
    if problems:
        raise ValidationError({"secrets": problems})


def _write_secrets(entry: ModelEntry, secrets: dict[str, str | None]) -> None:
    for name, value in secrets.items():
        if value is None:
            ModelSecret.objects.filter(model=entry, name=name).delete()
        else:
            ModelSecret.objects.update_or_create(model=entry, name=name, defaults={"value": value})


def _check_env_secret_overlap(entry: ModelEntry, secrets: dict[str, str | None]) -> None:
    kept = set(entry.secrets.values_list("name", flat=True)) if entry.pk else set()
    kept = (kept | {n for n, v in secrets.items() if v is not None}) - {n for n, v in secrets.items() if v is None}
    both = sorted(kept & set(entry.container_env or {}))
    if both:
        raise ValidationError({"secrets": f"{', '.join(both)} also in the container environment; give each once"})


def env_split(env: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str | None]]:
    """The API's `env` object into (container environment, secrets): a value `{"value": v, "secret": true}` is a
    secret, `{"value": v}` or a plain value is not, and `{"secret": true, "value": null}` removes a secret."""
    if not isinstance(env, dict):
        raise ValidationError({"env": "env must be an object of NAME to value"})
    plain: dict[str, Any] = {}
    secret: dict[str, str | None] = {}
    for name, value in env.items():
        if isinstance(value, dict):
            unknown = set(value) - {"value", "secret"}
            if unknown:
                raise ValidationError({"env": f"{name}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"})
            if value.get("secret") is True:
                secret[name] = value.get("value")
                continue
            value = value.get("value")
        plain[name] = value
    return plain, secret


def _field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    if hasattr(exc, "error_dict"):
        return [(name, message) for name, errors in exc.message_dict.items() for message in errors]
    return [("__all__", message) for message in exc.messages]


def model_create(*, data: dict[str, Any], secrets: dict[str, str] | None = None) -> ModelEntry:
    """Create a catalog entry (and its secret variables) after full validation; raises ValidationError naming the
    fields."""
    entry = ModelEntry(key=data.get("key", ""))
    _apply(entry, data)
    if not entry.name:
        entry.name = entry.key
    secrets = secrets or {}
    errors: dict[str, list[str]] = {}
    for check in (entry.full_clean, lambda: _check_secrets(secrets, removing_allowed=False)):
        try:
            check()
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    _check_env_secret_overlap(entry, secrets)
    with transaction.atomic():
        entry.save()
        _write_secrets(entry, secrets)
    return entry


def model_update(
    *, entry: ModelEntry, data: dict[str, Any], secrets: dict[str, str | None] | None = None
) -> ModelEntry:
    """Change the fields given in `data` (knobs merge; others replace) and set (value) or remove (None) the secret
    variables named in `secrets`; the rest is kept. Raises ValidationError naming the fields; writes nothing then."""
    fresh = ModelEntry.objects.get(pk=entry.pk)
    _apply(fresh, data)
    secrets = secrets or {}
    _check_secrets(secrets, removing_allowed=True)
    fresh.full_clean()
    _check_env_secret_overlap(fresh, secrets)
    with transaction.atomic():
        fresh.save()
        _write_secrets(fresh, secrets)
    return fresh


def model_update_knobs(*, entry: ModelEntry, knobs: dict[str, Any], vllm_args: list[str] | None) -> ModelEntry:
    """Change knobs and, when given, the vLLM flags of an entry."""
    data: dict[str, Any] = {"knobs": knobs}
    if vllm_args is not None:
        data["vllm_args"] = vllm_args
    return model_update(entry=entry, data=data)


def catalog_parse_yaml(*, text: str) -> list[dict[str, Any]]:
    """The entries of a models.yaml document (`models:` list), or CatalogImportError."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogImportError([f"not valid YAML: {exc}"]) from exc
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise CatalogImportError(["the file must be a mapping with a 'models' list"])
    return document["models"]


def catalog_import(*, entries: list[Any], labels: list[str] | None = None) -> ImportReport:
    """Validate every entry, report every error, and write nothing unless all of them are valid.

    Importing the same entries twice changes nothing the second time. `labels` name the entries in errors
    (default: "entry N (key)").
    """
    planned, errors = catalog_import_plan(entries=entries, labels=labels)
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


def _entry_problems(entry: ModelEntry, *, data: dict[str, Any], key_given: bool, label: str) -> list[str]:
    """Apply an imported entry's fields and validate them all; every problem found, each naming its field."""
    problems: list[str] = []
    # A missing key is already reported: its "cannot be blank" (and the name that defaults to it) would say it again.
    checks = (
        lambda: _apply(entry, data),
        lambda: entry.full_clean(exclude=None if key_given else ["key", "name"]),
    )
    for check in checks:
        try:
            check()
        except ValidationError as exc:
            problems.extend(f"{label}: {name}: {message}" for name, message in _field_errors(exc))
        except (TypeError, ValueError) as exc:
            problems.append(f"{label}: {exc}")
        if not entry.name:
            entry.name = entry.key
    return problems


def catalog_import_plan(
    *, entries: list[Any], labels: list[str] | None = None
) -> tuple[list[tuple[ModelEntry, bool]], list[str]]:
    """Each valid entry as an unsaved ModelEntry (and whether it differs from the stored one), and every error."""
    errors: list[str] = []
    planned: list[tuple[ModelEntry, bool]] = []
    seen: set[str] = set()
    existing = {entry.key: entry for entry in ModelEntry.objects.all()}
    for index, data in enumerate(entries, start=1):
        label = labels[index - 1] if labels else f"entry {index}"
        if not isinstance(data, dict):
            errors.append(f"{label}: must be a mapping")
            continue
        key = data.get("key")
        if isinstance(key, str) and key and not labels:
            label = f"entry {index} ({key})"
        # Every problem of an entry is reported, not only the first: the shape, then each field's validation.
        entry_errors: list[str] = []
        unknown = set(data) - ENTRY_FIELDS
        if unknown:
            entry_errors.append(f"{label}: unknown field(s): {', '.join(sorted(map(str, unknown)))}")
        known = {name: value for name, value in data.items() if name not in unknown}
        has_key = isinstance(key, str) and bool(key)
        if not has_key:
            entry_errors.append(f"{label}: key: this field is required")
        elif key in seen:
            entry_errors.append(f"{label}: key: {key!r} appears more than once")
        if has_key:
            seen.add(key)
        current = existing.get(key) if has_key else None
        entry = ModelEntry.objects.get(pk=current.pk) if current else ModelEntry(key=key if has_key else "")
        before = {f: getattr(entry, f) for f in _compared_fields()} if current else None
        entry_errors += _entry_problems(entry, data=known, key_given=has_key, label=label)
        if entry_errors:
            errors.extend(entry_errors)
            continue
        after = {f: getattr(entry, f) for f in _compared_fields()}
        planned.append((entry, before is None or before != after))
    return planned, errors


def _compared_fields() -> list[str]:
    return [f.name for f in ModelEntry._meta.concrete_fields if f.name not in ("id", "created_at", "updated_at")]


def catalog_export() -> str:
    """The whole catalog as a models.yaml document that `catalog_import` accepts unchanged."""
    models = []
    with_secrets: list[str] = []
    for entry in ModelEntry.objects.order_by("key").prefetch_related("secrets"):
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
        if entry.image:
            item["image"] = entry.image
        if entry.mods:
            item["mods"] = list(entry.mods)
        if entry.container_env:
            item["container_env"] = dict(entry.container_env)
        if entry.launcher_flags:
            item["launcher_flags"] = list(entry.launcher_flags)
        item["enabled"] = entry.enabled
        models.append(item)
        names = sorted(secret.name for secret in entry.secrets.all())
        if names:
            with_secrets.append(f"{entry.key}: {', '.join(names)}")
    header = ""
    if with_secrets:
        # Names only: secret values never leave the database this way.
        header = "# Secret variables are not exported; set them again after an import:\n" + "".join(
            f"#   {line}\n" for line in with_secrets
        )
    return header + yaml.safe_dump({"models": models}, sort_keys=False, allow_unicode=True)


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
