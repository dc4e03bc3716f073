"""`manage.py swaps [--limit N]`: recent swaps, newest first."""

from __future__ import annotations

from django.core.management.base import CommandParser

from commandline.base import OperatorCommand
from swaps.selectors import swap_history


class Command(OperatorCommand):
    help = "List recent swaps with state, duration and who asked."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=20)

    def handle(self, *args, limit: int, **options) -> None:  # type: ignore[override]
        for swap in swap_history(limit=limit):
            duration = f"{swap.duration_s:.1f}s" if swap.duration_s is not None else "-"
            dry = " dry-run" if swap.dry_run else ""
            self.stdout.write(
                f"{swap.created_at:%Y-%m-%d %H:%M:%S} {swap.model_key:<24} {swap.state:<11} {duration:>8}{dry} "
                f"by {swap.requested_by} ({swap.id})"
            )
