"""`manage.py catalog import FILE` (all or nothing), `manage.py catalog export`, and
`manage.py catalog import-recipes DIR` (the launcher's recipes/*.yaml, all or nothing)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from audit.services import audit_record
from catalog.recipes import catalog_import_recipes
from catalog.services import CatalogImportError, ImportReport, catalog_export, catalog_import, catalog_parse_yaml
from commandline.base import OperatorCommand


class Command(OperatorCommand):
    help = (
        "Import a models.yaml into the catalog (validated as a whole), export the catalog as YAML, or import the "
        "launcher's recipes/*.yaml."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import")
        imp.add_argument("file")
        sub.add_parser("export")
        recipes = sub.add_parser("import-recipes", help="import the launcher's recipes/*.yaml (not secrets)")
        recipes.add_argument("directory")

    def handle(self, *args, action: str, **options) -> None:  # type: ignore[override]
        if action == "export":
            self.stdout.write(catalog_export(), ending="")
            return
        if action == "import-recipes":
            directory = Path(options["directory"])
            if not directory.is_dir():
                raise CommandError(f"{directory} is not a directory")
            try:
                result = catalog_import_recipes(directory=directory)
            except CatalogImportError as exc:
                raise self._refused(exc, where=f"{directory}/") from exc
            self._done(target=str(directory), action="catalog.import_recipes", report=result.report)
            return
        path = Path(options["file"])
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            report = catalog_import(entries=catalog_parse_yaml(text=text))
        except CatalogImportError as exc:
            raise self._refused(exc, where=f"{path}: ") from exc
        self._done(target=str(path), action="catalog.import", report=report)

    def _refused(self, exc: CatalogImportError, *, where: str) -> CommandError:
        """Each error on its own line (after `where`), then the one line that says nothing was imported."""
        for error in exc.errors:
            self.stderr.write(f"{where}{error}")
        return CommandError(f"{len(exc.errors)} error(s); nothing was imported")

    def _done(self, *, target: str, action: str, report: ImportReport) -> None:
        audit_record(
            actor="manage.py",
            action=action,
            target=target,
            detail={"created": report.created, "updated": report.updated},
        )
        self.stdout.write(
            f"created {len(report.created)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}"
        )
