"""First-run set-up: the admin user, created once with a generated (or given) password."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model


def admin_ensure() -> tuple[str, str | None]:
    """Create the first admin if no superuser exists. Returns (username, password shown once or None)."""
    User = get_user_model()
    username = os.environ.get("SPARKCONTROL_ADMIN_USER", "").strip() or "admin"
    if User.objects.filter(is_superuser=True).exists():
        return username, None
    given = os.environ.get("SPARKCONTROL_ADMIN_PASSWORD", "")
    password = given or secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    return username, (None if given else password)
