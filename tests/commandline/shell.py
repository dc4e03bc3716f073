"""Running `manage.py` in the test process the way a shell does: argument parsing, error printing, exit code."""

from __future__ import annotations

import io

import pytest
from django.core.management import ManagementUtility


def manage(*argv: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """Run `manage.py ARGV`; the exit code, stdout and stderr."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.setattr("django.db.connections.close_all", lambda: None)  # the test database outlives the command
    code = 0
    try:
        ManagementUtility(["manage.py", *argv]).execute()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
