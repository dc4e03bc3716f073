"""`manage.py catalog import` names every problem of every entry, not only the first of each."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from catalog.models import ModelEntry

BAD = """
models:
  - key: bad one
    repo: sim/x
    local_path: /models/x
    nodes: 7
    bogus: 1
  - repo: sim/y
    nodes: zero
    knobs: {nonsense: 1}
"""


@pytest.mark.django_db
def test_every_error_of_every_entry_is_reported(tmp_path, capsys):
    path = tmp_path / "models.yaml"
    path.write_text(BAD)
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("catalog", "import", str(path))
    errors = capsys.readouterr().err
    first = [line for line in errors.splitlines() if "entry 1 (bad one)" in line]
    second = [line for line in errors.splitlines() if "entry 2:" in line]
    assert any("unknown field(s): bogus" in line for line in first), errors
    assert any("key:" in line and "slug" in line for line in first), errors
    assert any("nodes:" in line for line in first), errors
    assert any("local_path:" in line for line in first), errors
    assert any("key: this field is required" in line for line in second), errors
    assert any("nodes:" in line for line in second), errors
    assert any("unknown knob(s): nonsense" in line for line in second), errors
    assert not any("cannot be blank" in line for line in second), errors
    assert ModelEntry.objects.count() == 0
