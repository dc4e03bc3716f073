"""The programs a real launcher calls on a Spark, as the simulation provides them on every node.

ssh/scp by cluster IP, ip, ibdev2netdev (with the CX7 link setting), nc, docker top and docker cp.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from sparksim import SimCluster

from .conftest import Shell, wait_for


# -- ssh / scp ------------------------------------------------------------------------------------
def test_ssh_by_cluster_ip_reaches_the_other_node_with_its_own_login_environment(sim, shell):
    worker = sim.workers[0]
    rc, out, err = shell.run(
        f"export ONLY_ON_HEAD=1; ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o ConnectTimeout=5 {worker.ip} "
        "'echo $SPARKSIM_NODE $HOME; pwd; echo head-var=[$ONLY_ON_HEAD]'"
    )
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{worker.name} {worker.dir}"
    assert lines[1] == worker.dir
    assert lines[2] == "head-var=[]"


def test_ssh_keeps_the_remote_exit_code_and_reaches_itself_by_its_own_ip(sim, shell):
    rc, out, _ = shell.run(f"ssh {sim.workers[0].ip} 'exit 7'")
    assert rc == 7
    rc, out, _ = shell.run(f"ssh {sim.head.ip} 'echo $SPARKSIM_NODE'")
    assert (rc, out.strip()) == (0, sim.head.name)


def test_ssh_to_an_address_without_a_node_fails_like_real_ssh(sim, shell):
    rc, out, err = shell.run("ssh -o BatchMode=yes 10.0.0.77 true")
    assert rc == 255
    assert err.strip() == "ssh: connect to host 10.0.0.77 port 22: No route to host"
    rc, _, err = shell.run(f"ssh -p 2222 {sim.workers[0].ip} true")
    assert rc == 255
    assert "port 2222: Connection refused" in err
    rc, _, err = shell.run("ssh -Z 10.0.0.2 true")
    assert rc == 255
    assert "unknown option -- Z" in err


def test_scp_copies_to_a_node_by_ip_files_and_directories(sim, shell):
    worker = sim.workers[0]
    rc, _, err = shell.run(
        "set -e; mkdir -p ~/pkg/sub; echo one > ~/pkg/run.sh; echo two > ~/pkg/sub/x; "
        f"scp -o BatchMode=yes -o StrictHostKeyChecking=no ~/pkg/run.sh {worker.ip}:/tmp/sparksim-scp-$$.sh; "
        f"scp -r -o BatchMode=yes ~/pkg {worker.ip}:copied; "
        f'ssh {worker.ip} "cat /tmp/sparksim-scp-$$.sh; rm -f /tmp/sparksim-scp-$$.sh"'
    )
    assert rc == 0, err
    assert open(os.path.join(worker.dir, "copied", "sub", "x")).read() == "two\n"
    rc, _, err = shell.run("scp ~/pkg/run.sh 10.0.0.77:/tmp/x")
    assert rc == 255
    assert "No route to host" in err


# -- ip / ibdev2netdev ----------------------------------------------------------------------------
def test_ip_shows_the_cluster_address_on_the_cx7_interface(sim, shell):
    rc, out, _ = shell.run("ip -o -f inet addr show enp1s0f1np1 | awk '{print $4}' | head -n 1")
    assert (rc, out.strip()) == (0, f"{sim.head.ip}/24")
    rc, out, _ = shell.run("ip addr show enp1s0f1np1")
    assert f"inet {sim.head.ip}/24 brd 10.0.0.255 scope global" in out
    assert "state UP" in out.splitlines()[0]
    rc, out, _ = shell.run("ip -o -4 addr show")
    assert [line.split()[1] for line in out.splitlines()] == ["lo", "enp1s0f1np1"]
    rc, out, _ = shell.run(f"ip route get {sim.workers[0].ip}")
    assert out.startswith(f"{sim.workers[0].ip} dev enp1s0f1np1 src {sim.head.ip}")
    rc, out, err = shell.run("ip addr show eth0")
    assert (rc, err.strip()) == (1, 'Device "eth0" does not exist.')


def test_ibdev2netdev_follows_the_cx7_link_setting(sim, shell):
    rc, out, _ = shell.run("ibdev2netdev")
    assert rc == 0
    assert out.splitlines() == [
        "rocep1s0f0 port 1 ==> enp1s0f0np0 (Down)",
        "rocep1s0f1 port 1 ==> enp1s0f1np1 (Up)",
        "roceP2p1s0f0 port 1 ==> enP2p1s0f0np0 (Down)",
        "roceP2p1s0f1 port 1 ==> enP2p1s0f1np1 (Up)",
    ]
    try:
        sim.set_cx7_links(0, sim.head.name)
        _, out, _ = shell.run("ibdev2netdev; ip -o -4 addr show | awk '{print $2, $4}'")
        assert out.count("(Down)") == 4
        assert f"enP7s7 {sim.head.ip}/24" in out
        # The worker keeps its links: the setting is per node.
        _, out, _ = shell.run("ibdev2netdev", node=sim.workers[0].name)
        assert out.count("(Up)") == 2
        sim.set_cx7_links(4)
        _, out, _ = shell.run("ibdev2netdev; ip -o -4 addr show | awk '{print $2, $4}'")
        assert out.count("(Up)") == 4
        assert f"enP7s7 {sim.head.ip}/24" in out
        assert "enp1s0f0np0 192.168.100.1/24" in out and "enp1s0f1np1 192.168.101.1/24" in out
        # A mesh address reaches the node as well.
        rc, out, _ = shell.run("ssh 192.168.100.2 'echo $SPARKSIM_NODE'")
        assert (rc, out.strip()) == (0, sim.workers[0].name)
    finally:
        sim.set_cx7_links(None)
    with pytest.raises(ValueError):
        sim.set_cx7_links(5)


def test_a_single_node_cluster_has_no_cx7_link_up(tmp_path):
    with SimCluster(root=tmp_path, nodes=1, load_seconds=0.2, sshd_wait=60) as one:
        shell = Shell(one)
        try:
            rc, out, _ = shell.run("ibdev2netdev; ip -o -f inet addr show enp1s0f1np1")
            assert rc == 0
            assert out.count("(Down)") == 4 and "inet" not in out
        finally:
            shell.close()


# -- nc ---------------------------------------------------------------------------------------------
def test_nc_probes_port_22_of_the_nodes(sim, shell):
    rc, _, _ = shell.run(f"nc -z -w 1 {sim.workers[0].ip} 22")
    assert rc == 0
    started = time.time()
    rc, _, err = shell.run("nc -zv -w 1 10.0.0.77 22")
    assert rc == 1
    assert time.time() - started >= 0.9
    assert "nc: connect to 10.0.0.77 port 22 (tcp) timed out" in err
    rc, _, err = shell.run(f"nc -zv -w 1 {sim.workers[0].ip} 1")
    assert rc == 1
    assert "Connection refused" in err


# -- docker top / cp / exec -w ----------------------------------------------------------------------
def test_docker_top_lists_pid_1_and_exec_processes_then_errors(sim, shell):
    rc, _, err = shell.run("docker run -d --rm --network host --name topc --entrypoint= vllm-node sleep infinity")
    assert rc == 0, err
    rc, _, err = shell.run("docker exec -d topc bash -c 'sleep 30 >> /proc/1/fd/1 2>&1'")
    assert rc == 0, err

    def rows():
        _, out, _ = shell.run("docker top topc")
        return out.splitlines()

    lines = wait_for(lambda: (r := rows()) and any(line.endswith("sleep 30") for line in r) and r)
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert lines[0].startswith("UID" + " " * 17 + "PID")
    assert lines[1].endswith(" sleep infinity")
    assert any(line.endswith("bash -c sleep 30 >> /proc/1/fd/1 2>&1") for line in lines)
    # The exec'd process ends; the container stays with PID 1 alone.
    pid = next(line.split()[1] for line in lines if line.endswith(" sleep 30"))
    shell.run(f"kill {pid}")
    wait_for(lambda: len(rows()) == 2)
    rc, _, err = shell.run("docker top nosuch")
    assert (rc, err.strip()) == (1, "Error response from daemon: No such container: nosuch")
    shell.run("docker run -d --name keptc --entrypoint= vllm-node true")
    wait_for(lambda: "keptc" in shell.run("docker ps -a --filter status=exited --format '{{.Names}}'")[1])
    rc, _, err = shell.run("docker top keptc")
    assert rc == 1 and err.startswith("Error response from daemon: container ") and "is not running" in err
    shell.run("docker rm keptc")


def test_docker_cp_and_exec_workdir_use_the_container_s_own_files(sim, shell):
    real_workspace = os.path.exists("/workspace")
    # An image that does not create /workspace (an upstream vllm-openai image; the launcher's own creates it).
    for node in sim.nodes:
        sim.set_image(node.name, "vllm-openai", "sha256:" + "cd" * 32)
    rc, _, err = shell.run("docker run -d --rm --network host --name cpc --entrypoint= vllm-openai sleep infinity")
    assert rc == 0, err
    rc, _, err = shell.run("docker exec -w /workspace cpc true")
    assert rc == 126
    assert 'chdir to cwd ("/workspace") set in config.json failed' in err
    rc, _, err = shell.run("echo 'echo hi' > ~/s.sh; docker cp ~/s.sh cpc:/workspace/exec-script.sh")
    assert rc == 1
    assert err.strip() == "Error response from daemon: Could not find the file /workspace in container cpc"
    rc, _, err = shell.run(
        "set -e; docker exec -w / cpc mkdir -p /workspace; docker cp ~/s.sh cpc:/workspace/exec-script.sh; "
        "docker exec -w / cpc chmod +x /workspace/exec-script.sh; docker exec cpc bash -c /workspace/exec-script.sh"
    )
    assert rc == 0, err
    rc, out, err = shell.run(
        "docker exec -w /workspace cpc pwd; docker exec -i cpc bash -c 'cat /workspace/exec-script.sh'"
    )
    assert out.splitlines()[1] == "echo hi"
    assert os.path.exists("/workspace") == real_workspace
    # Directories: "dir/." copies the contents, "dir" the directory itself; and back out of the container.
    rc, _, err = shell.run(
        "set -e; mkdir -p ~/mod/a; echo r > ~/mod/run.sh; echo x > ~/mod/a/x; "
        "docker exec -w / cpc mkdir -p /workspace/mods/m; docker cp ~/mod/. cpc:/workspace/mods/m/; "
        "docker cp ~/mod cpc:/workspace/; rm -rf ~/back; docker cp cpc:/workspace ~/back"
    )
    assert rc == 0, err
    back = os.path.join(sim.head.dir, "back")
    assert open(os.path.join(back, "mods", "m", "run.sh")).read() == "r\n"
    assert open(os.path.join(back, "mod", "a", "x")).read() == "x\n"
    rc, _, err = shell.run("docker cp ~/nope cpc:/workspace/")
    assert rc == 1 and "no such file or directory" in err
    rc, _, err = shell.run("docker cp ~/s.sh nosuch:/workspace/")
    assert (rc, err.strip()) == (1, "Error response from daemon: No such container: nosuch")


def test_exec_paths_under_a_bind_mount_reach_its_source(sim, shell):
    rc, _, err = shell.run(
        "mkdir -p ~/.cache/huggingface/spark-control && echo 'export TOKEN=s3' > ~/.cache/huggingface/spark-control/f "
        "&& docker run -d --rm --network host --name bindc -v $HOME/.cache/huggingface:/root/.cache/huggingface "
        "--entrypoint= vllm-node sleep infinity"
    )
    assert rc == 0, err
    rc, out, err = shell.run("docker exec bindc sh -c '. /root/.cache/huggingface/spark-control/f && echo $TOKEN'")
    assert (rc, out.strip()) == (0, "s3"), err
    rc, out, _ = shell.run("docker inspect -f '{{json .Mounts}}' bindc")
    assert [m["Destination"] for m in json.loads(out)] == ["/root/.cache/huggingface"]


def test_the_fake_launcher_text_follows_its_generation(sim):
    def text() -> str:
        with open(sim.launcher_path, encoding="utf-8") as fh:
            return fh.read()

    assert "Command dispatched in background" in text() and "%q" in text()
    try:
        sim.set_launcher_version("2026-02-26")
        assert "Command dispatched in background" in text() and "%q" not in text()
        sim.set_launcher_version("old")
        assert "Command dispatched in background" not in text()
    finally:
        sim.set_launcher_version(None)
    assert "%q" in text()
