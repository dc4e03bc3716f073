"""`manage.py apitoken create NAME --scope read|operate|admin|inference`, `list`, `revoke NAME`."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sparkcontrol.audit import audit_record
from sparkcontrol.models import APIToken, TokenScope
from sparkcontrol.tokens import apitoken_create, apitoken_revoke


class Command(BaseCommand):
    help = "Create, list or revoke API tokens. `create` prints the token alone on its last line, once."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("name")
        create.add_argument("--scope", choices=TokenScope.values, default=TokenScope.READ)
        sub.add_parser("list")
        revoke = sub.add_parser("revoke")
        revoke.add_argument("name")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "create":
            try:
                token, plain = apitoken_create(name=options["name"], scope=options["scope"], created_by="manage.py")
            except ValidationError as exc:
                raise CommandError("; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items())) from exc
            audit_record(actor="manage.py", action="token.create", target=token.name)
            self.stdout.write(f"Created token {token.name!r} with scope {token.scope}. It is shown once:")
            self.stdout.write(plain)
        elif action == "list":
            for token in APIToken.objects.order_by("name"):
                state = "revoked" if token.revoked else "live"
                self.stdout.write(
                    f"{token.name:<32} {token.scope:<10} {state:<8} last used {token.last_used_at or '-'}"
                )
        else:
            if not apitoken_revoke(name=options["name"]):
                raise CommandError(f"no live token named {options['name']!r}")
            audit_record(actor="manage.py", action="token.revoke", target=options["name"])
            self.stdout.write(f"Revoked {options['name']}")
