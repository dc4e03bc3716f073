"""`manage.py catalog import FILE` (all or nothing) and `manage.py catalog export`."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.services import CatalogImportError, catalog_export, catalog_import, catalog_parse_yaml
from sparkcontrol.audit import audit_record


class Command(BaseCommand):
    help = "Import a models.yaml into the catalog (validated as a whole) or export the catalog as YAML."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import")
        imp.add_argument("file")
        sub.add_parser("export")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "export":
            self.stdout.write(catalog_export(), ending="")
            return
        path = Path(options["file"])
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            report = catalog_import(entries=catalog_parse_yaml(text=text))
        except CatalogImportError as exc:
            for error in exc.errors:
                self.stderr.write(f"{path}: {error}")
            raise CommandError(f"{len(exc.errors)} error(s); nothing was imported") from exc
        audit_record(
            actor="manage.py",
            action="catalog.import",
            target=str(path),
            detail={
                "created": report.created,
                "updated": report.updated,
            },
        )
        self.stdout.write(
            f"created {len(report.created)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}"
        )
