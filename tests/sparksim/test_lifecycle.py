"""Start-up and shutdown: nothing of a cluster survives its context, and the CLI up/down/record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sparksim import SimCluster
from tests.sparksim.conftest import Shell, served_models, wait_for

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose command line or environment mentions ``text``."""
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{entry}/stat") as fh:
                if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if needle in cmdline or needle in environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_no_process_remains_after_the_context_exits(tmp_path):
    root = tmp_path / "lifecycle"
    with SimCluster(root=root, nodes=2, load_seconds=0.2, sshd_wait=60) as sim:
        shell = Shell(sim)
        try:
            ips = ",".join(n.ip for n in sim.nodes)
            rc, out, _ = shell.launcher(
                f"-n {ips} -d exec vllm serve sim/tiny-model --served-model-name t --port {sim.vllm_port} -tp 2"
            )
            assert rc == 0, out
            wait_for(lambda: served_models(sim.vllm_port) == ["t"])
            # A follower and a stray background process inside a session, both left running.
            client = shell.client(sim.head.name)
            client.exec_command("docker logs -f vllm_node > /dev/null")
            client.exec_command("nohup sleep 600 > /dev/null 2>&1 &")
            time.sleep(0.3)
            assert len(sim.processes()) >= 8
            assert processes_mentioning(str(root))
        finally:
            shell.close()
    assert processes_mentioning(str(root)) == []
    ps = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True, check=True).stdout
    assert [line for line in ps.splitlines() if str(root) in line and not line.startswith("Z")] == []
    assert served_models(sim.vllm_port) == []


def test_cli_up_record_down(tmp_path):
    root = tmp_path / "cli"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparksim", "up", "--root", str(root), "--nodes", "1", "--load-seconds", "0.2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
            if line.startswith("}"):
                break
        info = json.loads("".join(lines))
        assert info["root"] == str(root) and len(info["nodes"]) == 1
        assert info["nodes"][0]["host_key_line"].startswith("ssh-ed25519 AAAA")
        assert os.path.exists(info["client_key_path"]) and info["launcher_path"].endswith("launch-cluster.sh")
        ssh = [
            "ssh",
            "-i",
            info["client_key_path"],
            "-p",
            str(info["nodes"][0]["port"]),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={info['known_hosts_path']}",
            "-o",
            "StrictHostKeyChecking=yes",
            f"{info['user']}@127.0.0.1",
            "docker ps -q",
        ]
        assert subprocess.run(ssh, capture_output=True, timeout=30).returncode == 0
        out = subprocess.run(
            [sys.executable, "-m", "sparksim", "record", "--root", str(root), "--prog", "docker"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out.splitlines()[-1])["argv"] == ["ps", "-q"]
        subprocess.run(
            [sys.executable, "-m", "sparksim", "down", "--root", str(root)],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    assert processes_mentioning(str(root)) == []


def test_launcher_dir_installs_a_copy_of_the_checkout_without_git(tmp_path, monkeypatch):
    checkout = tmp_path / "spark-vllm-docker"
    (checkout / ".git").mkdir(parents=True)
    (checkout / "recipes").mkdir()
    (checkout / "launch-cluster.sh").write_text("#!/bin/bash\necho real launcher on $(hostname)\n")
    (checkout / "recipes" / "r.yaml").write_text("x: 1\n")
    with pytest.raises(ValueError):
        SimCluster(root=tmp_path / "bad", nodes=1, launcher_dir=tmp_path / "nowhere")
    monkeypatch.setenv("SPARKSIM_LAUNCHER_DIR", str(checkout))
    with SimCluster(root=tmp_path / "sim", nodes=2, load_seconds=0.2, sshd_wait=60) as sim:
        described = json.loads((tmp_path / "sim" / "cluster.json").read_text())
        assert (described["launcher"], described["launcher_dir"]) == ("real", str(checkout))
        for node in sim.nodes:
            installed = os.path.join(node.dir, "spark-vllm-docker")
            assert sorted(os.listdir(installed)) == ["launch-cluster.sh", "recipes"]
            assert os.path.exists(os.path.join(installed, "recipes", "r.yaml"))
    # An explicit "" is the fake launcher, whatever the environment says; it replaces the copy.
    with SimCluster(root=tmp_path / "sim", nodes=2, load_seconds=0.2, sshd_wait=60, launcher_dir="") as sim:
        assert json.loads((tmp_path / "sim" / "cluster.json").read_text())["launcher"] == "fake"
        with open(sim.launcher_path, encoding="utf-8") as fh:
            assert "sparksim._entry" in fh.read()
        assert not os.path.exists(os.path.join(sim.head.dir, "spark-vllm-docker", "recipes"))
