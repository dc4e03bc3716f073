"""First-run set-up: migrations and the admin user, created once with a generated (or given) password.

Scaled out, several `serve` processes may start together on a fresh database: their migrations take turns (a
Postgres advisory lock), and only one of them creates the admin.

A start on an up-to-date database does not run `migrate` at all: Django's migration loader imports every migration
module of every app and renders the whole model state to find that there is nothing to do, ~2 MiB that stayed in
the serving process's heap for its lifetime (and ~0.3 s). The files of each app's migrations package are listed
by name instead and compared with the `django_migrations` table; only when every one is recorded as applied is
`migrate` skipped.
"""

from __future__ import annotations

import os
import pkgutil
import secrets
from importlib import import_module

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

# Any fixed number: the advisory lock that makes concurrent `serve` start-ups migrate one after the other.
MIGRATE_LOCK_KEY = 0x5C_0A_11_66


def migrations_pending() -> bool:
    """Whether some migration file of an installed app is not recorded as applied (or that cannot be told)."""
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.recorder import MigrationRecorder

    recorder = MigrationRecorder(connection)
    if not recorder.has_table():
        return True
    applied = set(recorder.applied_migrations())
    for config in apps.get_app_configs():
        # Where Django's loader looks for this app's migrations (MIGRATION_MODULES included), without loading them.
        module_name, _ = MigrationLoader.migrations_module(config.label)
        if module_name is None:
            continue  # migrations turned off for this app
        try:
            package = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                return True  # the package is there but does not import: let migrate say why
            continue  # an app without migrations
        for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
            # Django's loader skips the same names (private modules, editor leftovers).
            if not module.ispkg and module.name[0] not in "_~" and (config.label, module.name) not in applied:
                return True
    return False


def migrate_serialised() -> None:
    """Apply migrations; on Postgres one process at a time (the next one then finds nothing to do)."""
    if not migrations_pending():
        return
    if connection.vendor != "postgresql":
        # SQLite: one process per data directory (the data directory claim), and IMMEDIATE transactions.
        call_command("migrate", interactive=False, verbosity=0)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK_KEY])
    try:
        call_command("migrate", interactive=False, verbosity=0)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK_KEY])


def admin_ensure() -> tuple[str, str | None]:
    """Create the first admin if no superuser exists. Returns (username, password shown once or None)."""
    User = get_user_model()
    username = os.environ.get("SPARKCONTROL_ADMIN_USER", "").strip() or "admin"
    if User.objects.filter(is_superuser=True).exists():
        return username, None
    given = os.environ.get("SPARKCONTROL_ADMIN_PASSWORD", "")
    password = given or secrets.token_urlsafe(12)
    try:
        with transaction.atomic():
            User.objects.create_superuser(username=username, email="", password=password)
    except IntegrityError:
        # Another process starting at the same moment created it first: its password is the one shown.
        if User.objects.filter(username=username, is_superuser=True).exists():
            return username, None
        raise
    return username, (None if given else password)
