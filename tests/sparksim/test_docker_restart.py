"""docker start and restart on a simulated node, as real docker answers them, and a fake service run as a container
(it loads, then listens; a restart takes it down and brings it back on the same port)."""

from __future__ import annotations

import json
import socket
import time

import pytest

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_until(check, timeout: float = 20.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def test_restart_and_start_answer_like_docker(sim, shell):
    rc, out, err = shell.run("docker restart nope other", node="spark2")
    assert rc == 1 and out == ""
    assert err.splitlines() == [
        "Error response from daemon: No such container: nope",
        "Error response from daemon: No such container: other",
    ]
    rc, out, err = shell.run("docker restart", node="spark2")
    assert rc == 1 and '"docker restart" requires at least 1 argument.' in err
    rc, _, err = shell.run("docker start nope", node="spark2")
    assert rc == 1 and "No such container: nope" in err
    rc, out, _ = shell.run("docker run -d --name box vllm-node sleep infinity", node="spark2")
    assert rc == 0
    rc, out, _ = shell.run("docker inspect box", node="spark2")
    first = json.loads(out)[0]
    rc, out, err = shell.run("docker restart -t 1 box", node="spark2")
    assert (rc, out.strip(), err) == (0, "box", "")
    rc, out, _ = shell.run("docker inspect box", node="spark2")
    again = json.loads(out)[0]
    # The same container (id, creation time), running again with a new start time.
    assert again["Id"] == first["Id"] and again["Created"] == first["Created"]
    assert again["State"]["Running"] and again["State"]["StartedAt"] >= first["State"]["StartedAt"]
    assert shell.run("docker stop box", node="spark2")[0] == 0
    rc, out, _ = shell.run("docker inspect -f '{{.State.Running}}' box", node="spark2")
    assert out.strip() == "false"
    rc, out, err = shell.run("docker start box", node="spark2")
    assert (rc, out.strip()) == (0, "box")
    assert sim.containers("spark2") == ["box"]
    # A restart of a stopped container starts it; of an --rm one keeps it (docker does not auto-remove on restart).
    shell.run("docker run -d --rm --name temp vllm-node sleep infinity", node="spark2")
    rc, out, _ = shell.run("docker restart temp", node="spark2")
    assert (rc, out.strip()) == (0, "temp")
    assert sorted(sim.containers("spark2")) == ["box", "temp"]


def test_a_fake_service_container_goes_down_on_restart_and_listens_again_after_its_start_delay(sim, shell):
    port = sim.run_service("spark2", "kokoro", "tts", start_seconds=1.0)
    assert not listening(port)  # loading
    wait_until(lambda: listening(port))
    started = time.monotonic()
    rc, out, _ = shell.run("docker restart kokoro", node="spark2")
    assert (rc, out.strip()) == (0, "kokoro")
    assert not listening(port)
    wait_until(lambda: listening(port))
    assert time.monotonic() - started >= 1.0
    log = sim.container_log("spark2", "kokoro")
    assert log.count("loading tts service (1 s)") == 2 and log.count(f"listening on http://127.0.0.1:{port}") == 2
    # The start-up delay is a node setting too.
    sim.set_node_env("spark2", "SPARKSIM_SERVICE_START_SECONDS", "0.1")
    try:
        quick = sim.run_service("spark2", "qdrant", "qdrant")
        assert wait_until(lambda: listening(quick)) < 5
    finally:
        sim.set_node_env("spark2", "SPARKSIM_SERVICE_START_SECONDS", None)
