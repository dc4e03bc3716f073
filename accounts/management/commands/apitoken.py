"""`manage.py apitoken create NAME --scope read|operate|admin|inference [--expires-in 30d]`, `list`, `revoke NAME`."""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from accounts.models import APIToken, TokenScope
from accounts.tokens import apitoken_create, apitoken_revoke
from audit.services import audit_record
from commandline.base import OperatorCommand

UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """`90m`, `12h`, `30d`, `8w`: a positive duration."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([mhdw])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise CommandError(f"--expires-in {text!r}: give a positive number and a unit m, h, d or w (e.g. 30d)")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(OperatorCommand):
    help = "Create, list or revoke API tokens. `create` prints the token alone on its last line, once."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("name")
        create.add_argument("--scope", choices=TokenScope.values, default=TokenScope.READ)
        create.add_argument("--expires-in", default="", help="90m, 12h, 30d, 8w; default: never")
        sub.add_parser("list")
        revoke = sub.add_parser("revoke")
        revoke.add_argument("name")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "create":
            expires_at = timezone.now() + parse_duration(options["expires_in"]) if options["expires_in"] else None
            token, plain = apitoken_create(
                name=options["name"], scope=options["scope"], created_by="manage.py", expires_at=expires_at
            )
            audit_record(actor="manage.py", action="token.create", target=token.name)
            until = f", expiring {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ""
            self.stdout.write(f"Created token {token.name!r} with scope {token.scope}{until}. It is shown once:")
            self.stdout.write(plain)
        elif action == "list":
            for token in APIToken.objects.order_by("name"):
                expired = token.expires_at is not None and token.expires_at <= timezone.now()
                state = "revoked" if token.revoked else "expired" if expired else "live"
                self.stdout.write(
                    f"{token.name:<32} {token.scope:<10} {state:<8} last used {token.last_used_at or '-'}"
                    f"  expires {token.expires_at or 'never'}"
                )
        else:
            if not apitoken_revoke(name=options["name"]):
                raise CommandError(f"no live token named {options['name']!r}")
            audit_record(actor="manage.py", action="token.revoke", target=options["name"])
            self.stdout.write(f"Revoked {options['name']}")
