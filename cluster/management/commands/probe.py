"""`manage.py probe [--deep] [--connectivity] [--service KEY] [--timeout S]`: sweep now and print a table."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from cluster.models import Service
from cluster.sweeps import SweepReport, sweep_connectivity, sweep_deep, sweep_status
from commandline.base import OperatorCommand


class Command(OperatorCommand):
    help = (
        "Probe every enabled service now (status sweep; --deep: real work; --connectivity: TCP ports and SSH), "
        "record the results, print a table. Exits 1 when something is down."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--deep", action="store_true", help="Deep health: a one-token completion, one embedding...")
        parser.add_argument("--connectivity", action="store_true", help="TCP reachability of ports, SSH of each Spark.")
        parser.add_argument("--service", action="append", metavar="KEY", help="Only this service (repeatable).")
        parser.add_argument("--timeout", type=float, metavar="S", help="Per-probe deadline (default: settings).")

    def handle(
        self, *args, deep: bool, connectivity: bool, service: list[str] | None, timeout: float | None, **options
    ) -> None:  # type: ignore[override]
        if timeout is not None and not 0 < timeout <= 600:
            raise CommandError("--timeout must be between 0 and 600 seconds")
        keys = set(service) if service else None
        if keys:
            unknown = keys - set(Service.objects.filter(key__in=keys).values_list("key", flat=True))
            if unknown:
                raise CommandError(f"no service named {', '.join(sorted(unknown))}")
        reports: list[SweepReport] = []
        if deep or not connectivity:
            reports.append((sweep_deep if deep else sweep_status)(timeout=timeout, keys=keys))
        if connectivity:
            reports.append(sweep_connectivity(timeout=timeout, keys=keys))
        self._print(reports)
        if any(report.down for report in reports):
            raise SystemExit(1)

    def _print(self, reports: list[SweepReport]) -> None:
        rows = [("TARGET", "SWEEP", "STATUS", "LATENCY", "DETAIL")]
        for report in reports:
            for entry in report.entries:
                name = entry.name if entry.target == "service" else f"spark:{entry.name}"
                latency = f"{entry.outcome.latency_ms:.0f} ms" if entry.outcome.latency_ms is not None else "-"
                rows.append((name, report.sweep, entry.outcome.status, latency, entry.outcome.detail))
        skipped = sorted({key for report in reports for key in report.skipped})
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
            styled = line
            if row[2] == "down":
                styled = self.style.ERROR(line)
            elif row[2] == "degraded":
                styled = self.style.WARNING(line)
            self.stdout.write(styled.rstrip())
        if len(rows) == 1:
            self.stdout.write("no enabled service to probe")
        if skipped:
            self.stdout.write(f"disabled, not probed: {', '.join(skipped)}")
        for report in reports:
            self.stdout.write(f"{report.sweep} sweep: {len(report.entries)} probed in {report.duration_s:.2f} s")
