"""`manage.py lock status | acquire HOLDER [--ttl N] [--token T] | release HOLDER | release --token T | force-release`.

An operator's shell can release by holder name: the lock is released only if that holder holds it (taking it from
someone else is `force-release`, audited as forced). Every error is one line and a non-zero exit.
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from commandline.base import OperatorCommand, token_arg, validation_line
from coordination.selectors import lock_status
from coordination.services import (
    TTL_MAX_SECONDS,
    LockHeld,
    LockTokenMismatch,
    lock_acquire,
    lock_release,
    lock_release_held_by,
)

ACTOR = "manage.py"


def _held(exc: LockHeld) -> str:
    return f"the swap lock is held by {exc.holder!r} until {exc.expires_at.isoformat()}"


class Command(OperatorCommand):
    help = "Show, take, extend or release the swap lock. Pass a token as '-' to read it from stdin."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{status,acquire,release,force-release}")
        sub.add_parser("status", help="who holds the lock, until when, and its epoch")
        acquire = sub.add_parser("acquire", help="take the lock (the token is printed alone on the last line)")
        acquire.add_argument("holder")
        acquire.add_argument("--ttl", type=int, default=900, help=f"seconds, 1..{TTL_MAX_SECONDS} (default 900)")
        acquire.add_argument("--token", help="extend the lock held with this token ('-': read it from stdin)")
        release = sub.add_parser("release", help="release HOLDER's lock, or the lock held with --token")
        release.add_argument("holder", nargs="?", help="release the lock only if this holder holds it")
        release.add_argument("--token", help="the lock's token ('-': read it from stdin)")
        sub.add_parser("force-release", help="release the lock whoever holds it (audited as forced)")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "status":
            for key, value in lock_status().items():
                shown = value.isoformat() if isinstance(value, datetime) else "" if value is None else value
                self.stdout.write(f"{key}: {shown}")
        elif action == "acquire":
            self._acquire(
                holder=options["holder"], ttl=options["ttl"], token=token_arg(options["token"], option="--token")
            )
        elif action == "release":
            self._release(holder=options["holder"], token=options["token"])
        else:
            released = lock_release(token=None, force=True, actor=ACTOR)
            self.stdout.write("force-released" if released else "the lock was not held")

    def _acquire(self, *, holder: str, ttl: int, token: str | None) -> None:
        try:
            grant, created = lock_acquire(holder=holder, ttl_seconds=ttl, token=token, actor=ACTOR)
        except ValidationError as exc:
            raise CommandError(validation_line(exc).replace("ttl_seconds", "--ttl")) from None
        except LockHeld as exc:
            raise CommandError(f"{_held(exc)}; try again later, or `lock force-release` (audited)") from None
        verb = "granted" if created else "extended"
        self.stdout.write(f"{verb} to {grant.holder} until {grant.expires_at.isoformat()}, epoch {grant.epoch}")
        if created:
            self.stdout.write(grant.token)

    def _release(self, *, holder: str | None, token: str | None) -> None:
        if (holder is None) == (token is None):
            raise CommandError("give the HOLDER whose lock to release, or --token TOKEN ('-' reads it from stdin)")
        if holder is not None:
            try:
                released = lock_release_held_by(holder=holder, actor=ACTOR)
            except LockHeld as exc:
                raise CommandError(
                    f"the swap lock is held by {exc.holder!r}, not {holder!r}; "
                    "`lock force-release` takes it from them (audited)"
                ) from None
        else:
            try:
                released = lock_release(token=token_arg(token, option="--token"), force=False, actor=ACTOR)
            except LockTokenMismatch:
                status = lock_status()
                raise CommandError(
                    f"that is not the token of the lock held by {status['holder']!r}; "
                    f"`lock release {status['holder']}` or `lock force-release` (audited) release it"
                ) from None
        self.stdout.write("released" if released else "the lock was not held")
