"""`manage.py spark list`, `spark trust NAME [--yes]` (pin a host key after showing its fingerprint)."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from audit.services import audit_record
from cluster.models import SparkHost
from cluster.ssh import fetch_host_key, fingerprint
from commandline.base import OperatorCommand


class Command(OperatorCommand):
    help = "List Spark hosts, or pin a host's SSH key after showing its fingerprint."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        trust = sub.add_parser("trust")
        trust.add_argument("name")
        trust.add_argument("--yes", action="store_true", help="Pin without asking (after checking the fingerprint).")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "list":
            for host in SparkHost.objects.order_by("role", "name"):
                pinned = "pinned" if host.host_key else "NOT pinned"
                state = "" if host.enabled else " (disabled)"
                self.stdout.write(
                    f"{host.name:<16} {host.role:<7} {host.ssh_user}@{host.address}:{host.ssh_port} {pinned}{state}"
                )
            return
        host = SparkHost.objects.filter(name=options["name"]).first()
        if host is None:
            raise CommandError(f"no Spark host named {options['name']!r}")
        try:
            key = fetch_host_key(address=host.address, port=host.ssh_port)
        except OSError as exc:
            raise CommandError(f"cannot reach {host.address}:{host.ssh_port}: {exc}") from exc
        self.stdout.write(f"{host.name} ({host.address}:{host.ssh_port}) presents {key.get_name()} {fingerprint(key)}")
        line = f"{key.get_name()} {key.get_base64()}"
        if host.host_key.strip() == line:
            self.stdout.write("This key is already pinned.")
            return
        if host.host_key:
            self.stdout.write(self.style.WARNING("This differs from the pinned key!"))
        if not options["yes"]:
            answer = input("Pin this key? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                raise CommandError("not pinned")
        host.host_key = line
        host.full_clean()
        host.save(update_fields=["host_key"])
        audit_record(
            actor="manage.py", action="spark.trust", target=host.name, detail={"fingerprint": fingerprint(key)}
        )
        self.stdout.write(self.style.SUCCESS(f"Pinned {fingerprint(key)} for {host.name}"))
