"""The connectivity sweep against real OpenSSH servers (sparksim.SimCluster) and real TCP ports."""

from __future__ import annotations

import time

import pytest

from cluster.models import HostStatus, ProbeResult, Role, SparkHost, SweepKind
from cluster.selectors import spark_reachability
from cluster.sweeps import sweep_connectivity

pytestmark = [pytest.mark.django_db, pytest.mark.integration]
T = 1.0
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):  # type: ignore[no-untyped-def]
    from sparksim import SimCluster

    with SimCluster(root=tmp_path_factory.mktemp("sim-probes"), nodes=2, load_seconds=0.2, launcher_dir="") as cluster:
        yield cluster


@pytest.fixture
def sparks(sim, only_test_services) -> list[SparkHost]:  # type: ignore[no-untyped-def]
    hosts = []
    for node in sim.nodes:
        host = SparkHost(
            name=node.name,
            address=node.host,
            ssh_port=node.port,
            ssh_user=node.user,
            role=Role.HEAD if node.role == "head" else Role.WORKER,
            key_path=sim.client_key_path,
            host_key=node.host_key_line,
        )
        host.full_clean()
        host.save()
        hosts.append(host)
    return hosts


def host_statuses(report) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {e.name: (e.outcome.status, e.outcome.detail) for e in report.entries if e.target == "host"}


def test_each_enabled_spark_connects_and_authenticates_with_its_pinned_key(sparks):
    assert {row["probe"]["status"] for row in spark_reachability()} == {"unknown"}
    report = sweep_connectivity(timeout=5)
    assert [(row["name"], row["probe"]["status"]) for row in spark_reachability()] == [
        (host.name, "up") for host in sparks
    ]
    assert host_statuses(report) == {host.name: ("up", "SSH connects and authenticates") for host in sparks}
    assert {row.host.name: row.status for row in HostStatus.objects.select_related("host")} == {
        host.name: "up" for host in sparks
    }
    assert ProbeResult.objects.filter(host__isnull=False, sweep=SweepKind.CONNECTIVITY).count() == 2


def test_a_changed_or_missing_host_key_is_down_and_nothing_is_run(sparks):
    head, worker = sparks
    head.host_key = OTHER_KEY
    head.save(update_fields=["host_key"])
    worker.host_key = ""
    worker.save(update_fields=["host_key"])
    found = host_statuses(sweep_connectivity(timeout=5))
    assert found[head.name][0] == "down" and "host key" in found[head.name][1]
    assert found[worker.name][0] == "down" and "no pinned host key" in found[worker.name][1]


def test_a_disabled_spark_is_not_contacted(sparks):
    sparks[1].enabled = False
    sparks[1].save(update_fields=["enabled"])
    assert list(host_statuses(sweep_connectivity(timeout=5))) == [sparks[0].name]


def test_an_ssh_port_that_never_answers_is_down_within_the_deadline(sparks, farm):
    """A server that accepts TCP but never sends a banner: paramiko blocks in its thread, the sweep does not."""
    silent = farm.add("http", mode="hang")
    closed = farm.add("http", mode="refuse")
    SparkHost.objects.filter(pk=sparks[0].pk).update(ssh_port=silent.port)
    SparkHost.objects.filter(pk=sparks[1].pk).update(ssh_port=closed.port)
    started = time.perf_counter()
    found = host_statuses(sweep_connectivity(timeout=T))
    assert time.perf_counter() - started <= 1.10 * T
    assert found[sparks[0].name] == ("down", f"SSH {silent.port}: no answer within {T:g} s")
    assert found[sparks[1].name][0] == "down" and "cannot reach" in found[sparks[1].name][1]


def test_service_ports_and_sparks_in_one_sweep(sparks, farm, service_for):
    service_for(farm.add("qdrant"), key="qdrant")
    service_for(farm.add("tts", mode="refuse"), key="tts")
    report = sweep_connectivity(timeout=5)
    assert {e.name: e.outcome.status for e in report.entries} == {
        "qdrant": "up",
        "tts": "down",
        sparks[0].name: "up",
        sparks[1].name: "up",
    }
    # narrowed to some services, a sweep leaves the Sparks alone
    assert [e.name for e in sweep_connectivity(timeout=5, keys={"qdrant"}).entries] == ["qdrant"]
