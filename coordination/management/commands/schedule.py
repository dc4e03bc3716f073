"""`manage.py schedule list`: the jobs external schedulers registered, soonest first."""

from __future__ import annotations

from django.core.management.base import CommandParser

from commandline.base import OperatorCommand
from coordination.selectors import schedule_list


class Command(OperatorCommand):
    help = "List the schedule registry (what external schedulers announced; Spark Control never runs it)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{list}")
        sub.add_parser("list")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        for entry in schedule_list():
            next_run = entry["next_run"].isoformat() if entry["next_run"] else "-"
            stale = " STALE" if entry["stale"] else ""
            model = entry["model"] or "-"
            self.stdout.write(
                f"{entry['id']}\t{next_run}{stale}\t{entry['schedule']}\t{entry['owner']}\t{model}\t{entry['name']}"
            )
