"""`manage.py swap MODEL [--dry-run] [--wait]`: request a swap and (with --wait) follow it to the end."""

from __future__ import annotations

import shutil
import time

from django.core.management.base import CommandError, CommandParser

from commandline.base import OperatorCommand, token_arg
from swaps.models import Swap, SwapEvent, SwapState
from swaps.progress import MESSAGE_PREFIX, progress_bar_text
from swaps.selectors import swap_events, swap_get
from swaps.services import SwapRefused, swap_request


def _refusal(exc: SwapRefused) -> str:
    """The API's refusal in the command's own words: a held lock names the options that pass it."""
    if exc.status == 423:
        return (
            f"the swap lock is held by {exc.extra['holder']!r} until {exc.extra['expires_at']}; "
            "pass its token with --lock-token (- reads it from stdin), or --force (audited)"
        )
    extra = ", ".join(f"{k}={v}" for k, v in exc.extra.items() if v)
    return f"{exc.detail}{' (' + extra + ')' if extra else ''}"


class Command(OperatorCommand):
    help = "Swap the served model. With --wait, show progress and exit 0 on ready, 1 on failure or cancel."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--wait", action="store_true", help="Follow the swap until it ends.")
        parser.add_argument(
            "--lock-token", default=None, help="The swap lock's token, if it is held ('-': read it from stdin)."
        )
        parser.add_argument("--force", action="store_true", help="Pass a held lock (recorded in the audit log).")

    def handle(
        self, *args, model: str, dry_run: bool, wait: bool, lock_token: str | None, force: bool, **options
    ) -> None:  # type: ignore[override]
        try:
            swap = swap_request(
                model_key=model,
                dry_run=dry_run,
                actor="manage.py",
                lock_token=token_arg(lock_token, option="--lock-token"),
                force=force,
            )
        except SwapRefused as exc:
            raise CommandError(_refusal(exc)) from None
        self.stdout.write(f"swap {swap.id} queued for {model}{' (dry run)' if dry_run else ''}")
        if not wait:
            return
        swap = self._follow(swap)
        if swap.state != SwapState.READY:
            raise CommandError(f"swap {swap.state}: {swap.error or 'no error recorded'}")
        self.stdout.write(self.style.SUCCESS(f"ready in {swap.duration_s} s"))

    def _follow(self, swap: Swap) -> Swap:
        """Print the swap's events until it ends. On a terminal the loading progress is one bar, redrawn in place
        below the log lines; elsewhere its events are plain lines like the others."""
        bar = self.stdout.isatty()
        drawn = ""
        seq = 0
        while True:
            for event in swap_events(swap=swap, after=seq):
                seq = event.seq
                if bar and _is_progress(event):
                    continue
                if drawn:
                    self.stdout.write("\r\x1b[K", ending="")  # the bar's line takes the log line
                    drawn = ""
                prefix = f"[{event.state}]" if event.kind == "state" else "  "
                self.stdout.write(f"{prefix} {event.message}")
            swap = swap_get(swap_id=swap.id)
            if bar and swap.progress and not swap.is_terminal:
                text = progress_bar_text(swap.progress)[: max(20, shutil.get_terminal_size().columns - 1)]
                if text != drawn:
                    self.stdout.write("\r\x1b[K" + text, ending="")
                    self.stdout.flush()
                    drawn = text
            if swap.is_terminal and not swap_events(swap=swap, after=seq).exists():
                break
            time.sleep(0.2)
        if drawn:
            self.stdout.write("")
        return swap


def _is_progress(event: SwapEvent) -> bool:
    return event.kind == "progress" and event.message.startswith(MESSAGE_PREFIX)
