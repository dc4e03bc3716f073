"""`manage.py schedule`: the schedule registry (external jobs, shown only) and the actions Spark Control runs.

`list` prints the registry's jobs as before, then one line per scheduled action in the same columns, with
`spark-control` as the owner; `run NAME` runs an action now; `pause NAME` / `resume NAME` stop and restart its
schedule.
"""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from actions.selectors import action_get, action_last_runs, action_list
from actions.services import action_run_now, action_set_enabled
from coordination.management.commands.schedule import Command as RegistryCommand

ACTOR = "cli"


class Command(RegistryCommand):
    help = (
        "List the schedule registry and the scheduled actions; run, pause or resume a scheduled action "
        "(list | run NAME | pause NAME | resume NAME)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{list,run,pause,resume}")
        sub.add_parser("list")
        for name in ("run", "pause", "resume"):
            sub.add_parser(name).add_argument("name", help="the scheduled action's name")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "list":
            super().handle(*args, action=action, **options)
            self._list_actions()
            return
        scheduled = action_get(name=options["name"])
        if scheduled is None:
            raise CommandError(f"no scheduled action named {options['name']!r} (see: manage.py schedule list)")
        if action == "run":
            run = action_run_now(action=scheduled, actor=ACTOR)
            self.stdout.write(f"run {run.id} of {scheduled.name} queued")
        else:
            scheduled = action_set_enabled(action=scheduled, enabled=action == "resume", actor=ACTOR)
            state = f"next run {scheduled.next_run.isoformat()}" if scheduled.next_run else "paused"
            self.stdout.write(f"{scheduled.name}: {state}")

    def _list_actions(self) -> None:
        actions = list(action_list())
        last = action_last_runs(actions=actions)
        for scheduled in actions:
            next_run = scheduled.next_run.isoformat() if scheduled.next_run else "paused"
            run = last.get(scheduled.pk)
            outcome = f"last {run.outcome} {run.scheduled_for.isoformat()}" if run else "never run"
            what = f"{scheduled.action} {scheduled.argument}".strip()
            self.stdout.write(
                f"{scheduled.name}\t{next_run}\t{scheduled.cron} ({scheduled.timezone})\tspark-control\t"
                f"{scheduled.model or '-'}\t{what}: {outcome}"
            )
