"""`manage.py webhook add URL [--events swap_complete,swap_failed]`, `webhook list`, `webhook remove ID|URL`."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from commandline.base import OperatorCommand
from coordination.selectors import webhook_endpoint_find, webhook_endpoint_list
from coordination.services import webhook_endpoint_create, webhook_endpoint_delete
from coordination.webhooks import webhook_url_redacted

ACTOR = "manage.py"


class Command(OperatorCommand):
    help = "Add, list or remove webhook endpoints. `add` prints the new signing secret alone on its last line."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="{add,list,remove}")
        add = sub.add_parser("add")
        add.add_argument("url")
        add.add_argument("--events", default="swap_complete,swap_failed", help="comma-separated")
        add.add_argument("--disabled", action="store_true")
        sub.add_parser("list")
        remove = sub.add_parser("remove")
        remove.add_argument("ref", metavar="ID|URL")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "add":
            events = [name.strip() for name in options["events"].split(",") if name.strip()]
            endpoint, secret = webhook_endpoint_create(
                url=options["url"], events=events, enabled=not options["disabled"], actor=ACTOR
            )
            shown = webhook_url_redacted(endpoint.url)
            self.stdout.write(f"added endpoint {endpoint.pk}: {shown} ({', '.join(endpoint.events)})")
            self.stdout.write("signing secret (shown only now):")
            self.stdout.write(secret)
        elif action == "list":
            for endpoint in webhook_endpoint_list():
                state = "enabled" if endpoint.enabled else "disabled"
                self.stdout.write(
                    f"{endpoint.pk}\t{state}\t{','.join(endpoint.events)}\t{webhook_url_redacted(endpoint.url)}"
                )
        else:
            endpoint = webhook_endpoint_find(ref=options["ref"])
            if endpoint is None:
                raise CommandError(f"no webhook endpoint with id or URL {options['ref']!r}")
            webhook_endpoint_delete(endpoint=endpoint, actor=ACTOR)
            self.stdout.write(f"removed endpoint {options['ref']}")
