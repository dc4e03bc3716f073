"""`manage.py lock status|acquire HOLDER [--ttl N] [--token T]|release --token T|force-release`."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from coordination.selectors import lock_status
from coordination.services import LockHeld, LockTokenMismatch, lock_acquire, lock_release

ACTOR = "manage.py"


def _token(value: str | None) -> str | None:
    """`-` reads the token from stdin, which keeps it out of the process list."""
    if value == "-":
        return sys.stdin.readline().strip() or None
    return value


class Command(BaseCommand):
    help = "Show, take, extend or release the swap lock. Pass a token as '-' to read it from stdin."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status")
        acquire = sub.add_parser("acquire", help="take the lock (the token is printed alone on the last line)")
        acquire.add_argument("holder")
        acquire.add_argument("--ttl", type=int, default=900, help="seconds, 1..86400 (default 900)")
        acquire.add_argument("--token", help="extend the lock held with this token")
        release = sub.add_parser("release")
        release.add_argument("--token", required=True)
        sub.add_parser("force-release")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "status":
            for key, value in lock_status().items():
                self.stdout.write(f"{key}: {'' if value is None else value}")
        elif action == "acquire":
            try:
                grant, created = lock_acquire(
                    holder=options["holder"], ttl_seconds=options["ttl"], token=_token(options["token"]), actor=ACTOR
                )
            except LockHeld as exc:
                raise CommandError(str(exc)) from exc
            verb = "granted" if created else "extended"
            self.stdout.write(f"{verb} to {grant.holder} until {grant.expires_at.isoformat()}, epoch {grant.epoch}")
            if created:
                self.stdout.write(grant.token)
        elif action == "release":
            try:
                released = lock_release(token=_token(options["token"]), force=False, actor=ACTOR)
            except LockTokenMismatch as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write("released" if released else "the lock was not held")
        else:
            released = lock_release(token=None, force=True, actor=ACTOR)
            self.stdout.write("force-released" if released else "the lock was not held")
