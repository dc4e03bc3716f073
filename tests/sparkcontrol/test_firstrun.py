"""`serve` skips `migrate` only when every migration file of every app is recorded as applied."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from sparkcontrol.firstrun import migrations_pending

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_up_to_date_database_needs_no_migrate_and_one_missing_record_does():
    assert migrations_pending() is False
    recorder = MigrationRecorder(connection)
    row = recorder.migration_qs.get(app="swaps", name="0001_initial")
    row.delete()
    try:
        assert migrations_pending() is True
    finally:
        recorder.record_applied("swaps", "0001_initial")
    assert migrations_pending() is False


def test_a_migration_file_the_table_does_not_know_needs_migrate(tmp_path, monkeypatch):
    import swaps.migrations

    extra = tmp_path / "9999_not_yet_applied.py"
    extra.write_text("")
    monkeypatch.setattr(swaps.migrations, "__path__", [*swaps.migrations.__path__, str(tmp_path)])
    assert migrations_pending() is True
