"""Fixtures for the sparksim tests: one 2-node simulated cluster per module and a pinned-key SSH runner.

Nothing here needs Django; run alone with
``python -m pytest tests/sparksim -p no:django --confcutdir=tests/sparksim``.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import paramiko
import pytest

from sparksim import SimCluster

LOAD_SECONDS = 0.3


class Shell:
    """Runs commands on simulated nodes over SSH (paramiko, host keys pinned, unknown keys rejected)."""

    def __init__(self, sim: SimCluster):
        self.sim = sim
        self.clients: dict[str, paramiko.SSHClient] = {}

    def client(self, node_name: str) -> paramiko.SSHClient:
        if node_name not in self.clients:
            node = self.sim.node(node_name)
            client = paramiko.SSHClient()
            keytype, b64 = node.host_key_line.split()[:2]
            client.get_host_keys().add(
                f"[{node.host}]:{node.port}", keytype, paramiko.Ed25519Key(data=base64.b64decode(b64))
            )
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                node.host,
                port=node.port,
                username=node.user,
                key_filename=self.sim.client_key_path,
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            self.clients[node_name] = client
        return self.clients[node_name]

    def run(
        self, command: str, node: str | None = None, stdin: str | None = None, timeout: float = 30
    ) -> tuple[int, str, str]:
        client = self.client(node or self.sim.head.name)
        chan_in, chan_out, chan_err = client.exec_command(command, timeout=timeout)
        if stdin is not None:
            chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out = chan_out.read().decode()
        err = chan_err.read().decode()
        return chan_out.channel.recv_exit_status(), out, err

    def launcher(self, args: str, **kwargs) -> tuple[int, str, str]:
        return self.run(f"~/spark-vllm-docker/launch-cluster.sh {args}", **kwargs)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def http(method: str, url: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def served_models(port: int) -> list[str]:
    try:
        status, text = http("GET", f"http://127.0.0.1:{port}/v1/models", timeout=2)
    except OSError:
        return []
    return [m["id"] for m in json.loads(text)["data"]] if status == 200 else []


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> SimCluster:
    root = tmp_path_factory.mktemp("sparksim")
    with SimCluster(root=root, nodes=2, load_seconds=LOAD_SECONDS, sshd_wait=60, launcher_dir="") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shell(sim) -> Shell:
    sh = Shell(sim)
    yield sh
    sh.close()


@pytest.fixture
def t0() -> float:
    """The start time of the test, to pick its own records."""
    return time.time()


@pytest.fixture(autouse=True)
def clean_slate(request):
    """Every test starts with no container, no forced failure and the default load time."""
    if "sim" not in request.fixturenames:
        yield
        return
    cluster: SimCluster = request.getfixturevalue("sim")
    cluster.stop_containers()
    cluster.set_fail_mode(None)
    cluster.set_load_seconds(LOAD_SECONDS)
    yield
    cluster.stop_containers()
    cluster.set_fail_mode(None)


@pytest.fixture(scope="module")
def memory_back_at_once(sim):
    """Memory of a stopped model comes back at once (not over the simulator's 1.5 s): for modules whose tests
    launch right after the previous one stopped."""
    for node in sim.nodes:
        sim.set_node_env(node.name, "SPARKSIM_MEM_RELEASE_SECONDS", "0")
    yield
    for node in sim.nodes:
        sim.set_node_env(node.name, "SPARKSIM_MEM_RELEASE_SECONDS", None)
