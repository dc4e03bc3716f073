"""The per-process SSH connection pool against sparksim's real sshd: several nodes at once, reuse, identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.models import SparkHost
from cluster.ssh import SparkConnection, connection_pool, spark_connect, spark_connect_all

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def hosts(topology):  # type: ignore[no-untyped-def]
    connection_pool.clear()
    yield list(SparkHost.objects.filter(enabled=True).order_by("name"))
    connection_pool.clear()


def test_every_node_is_connected_at_once_then_reused(hosts):
    first = spark_connect_all(hosts)
    assert sorted(first) == [host.name for host in hosts]
    assert all(isinstance(connection, SparkConnection) for connection in first.values())
    assert all(connection.run("echo $SPARKSIM_NODE").stdout.strip() == name for name, connection in first.items())
    again = spark_connect_all(hosts)
    assert all(again[name] is first[name] for name in first)
    assert spark_connect(hosts[0]) is first[hosts[0].name]


def test_a_changed_identity_gets_a_new_connection_and_a_failure_is_returned(hosts, tmp_path):
    first = spark_connect_all(hosts)
    head = hosts[0]
    other_key = tmp_path / "same-key"
    other_key.symlink_to(Path(head.key_path))
    head.key_path = str(other_key)
    unreachable = SparkHost(name="nowhere", address="127.0.0.1", ssh_port=1, host_key=head.host_key, pk=10_000)
    found = spark_connect_all([head, unreachable])
    assert isinstance(found[head.name], SparkConnection) and found[head.name] is not first[head.name]
    assert not isinstance(found["nowhere"], SparkConnection)
    assert "nowhere" in str(found["nowhere"])
