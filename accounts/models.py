"""API tokens for automation and the scopes they carry."""

from __future__ import annotations

from django.db import models


class TokenScope(models.TextChoices):
    """What a token may do: read < operate < admin."""

    READ = "read", "read (GET routes)"
    OPERATE = "operate", "operate (swap, lock, schedule)"
    ADMIN = "admin", "admin (also force and catalog writes)"
    INFERENCE = "inference", "inference (the /v1 gateway only)"


SCOPE_RANK = {TokenScope.READ: 1, TokenScope.OPERATE: 2, TokenScope.ADMIN: 3}


class APIToken(models.Model):
    """A bearer token for automation; only its SHA-256 is stored, the token itself is shown once."""

    name = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False, help_text="Public part used for lookup.")
    token_hash = models.CharField(max_length=64, editable=False)
    scope = models.CharField(max_length=16, choices=TokenScope.choices, default=TokenScope.READ)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="After this moment the token answers 401 (token expired). Blank: never."
    )

    class Meta:
        verbose_name = "API token"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.scope})"
