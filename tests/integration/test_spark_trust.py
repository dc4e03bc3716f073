"""`manage.py spark trust NAME` shows the fingerprint and pins the key the server presents."""

import subprocess

import pytest
from django.core.management import call_command

from cluster.models import SparkHost

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_trust_pins_the_presented_key(sim, capsys):
    head = sim.head
    host = SparkHost.objects.create(name="fresh", address=head.host, ssh_port=head.port, ssh_user=head.user)
    call_command("spark", "trust", "fresh", "--yes")
    host.refresh_from_db()
    assert host.host_key == head.host_key_line
    out = capsys.readouterr().out
    keygen = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=head.host_key_line, capture_output=True, text=True, check=True
    ).stdout
    assert keygen.split()[1] in out  # the same SHA256 fingerprint ssh-keygen shows
    call_command("spark", "list")
    assert "fresh" in capsys.readouterr().out
