"""The fake docker CLI of a node: run (with the launchers' options), ps, exec, logs (--since, -f), stop, inspect,
meminfo."""

from __future__ import annotations

import calendar
import json
import os
import time

import pytest

from sparksim.fake_docker import DEFAULT_IMAGE_ID
from tests.sparksim.conftest import served_models, wait_for

pytestmark = pytest.mark.integration

RUN = "docker run -d --rm --network host --name box -e GREETING=hello vllm-node sleep infinity"


def test_run_ps_inspect_exec_stop(sim, shell):
    rc, out, _ = shell.run(RUN)
    assert rc == 0 and len(out.strip()) == 64
    rc, out, _ = shell.run("docker ps --format '{{.Names}}'")
    assert out.split() == ["box"]
    rc, out, _ = shell.run("docker ps --filter name=box")
    assert out.splitlines()[0].startswith("CONTAINER ID") and "box" in out.splitlines()[1]
    rc, out, _ = shell.run("docker ps --filter name=nothing --format '{{.Names}}'")
    assert out == ""
    rc, out, _ = shell.run("docker inspect box")
    state = json.loads(out)[0]["State"]
    assert state["Running"] is True and state["Status"] == "running" and state["StartedAt"].endswith("Z")
    rc, out, _ = shell.run("docker inspect -f '{{.State.Running}}' box")
    assert out.strip() == "true"
    rc, out, _ = shell.run("docker exec box bash -c 'echo $GREETING; exit 3'")
    assert rc == 3 and out.strip() == "hello"
    rc, out, _ = shell.run("docker run -d --name box vllm-node sleep infinity")
    assert rc == 125 and "Conflict" in out + _
    rc, out, _ = shell.run("docker stop box")
    assert rc == 0 and out.strip() == "box"
    assert sim.containers(sim.head.name) == []
    rc, out, err = shell.run("docker stop box")
    assert rc == 1 and err.strip() == "Error response from daemon: No such container: box"
    rc, out, err = shell.run("docker inspect box")
    assert rc == 1 and out.strip() == "[]" and "No such object: box" in err
    rc, out, err = shell.run("docker exec box true")
    assert rc == 1 and "No such container: box" in err


def test_stop_kills_every_process_of_the_container(sim, shell):
    shell.run(RUN)
    # A detached exec that starts its own session must die with the container too.
    shell.run("docker exec -d box bash -c 'setsid sleep 300 & sleep 300'")
    marker = None
    rc, out, _ = shell.run("docker inspect -f '{{.Id}}' box")
    marker = f"SPARKSIM_CID={out.strip()}".encode()

    def container_pids():
        import os

        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as fh:
                        if marker in fh.read().split(b"\0"):
                            pids.append(int(entry))
                except OSError:
                    pass
        return pids

    wait_for(lambda: len(container_pids()) >= 4)
    shell.run("docker stop box")
    assert container_pids() == []


def test_logs_since_and_follow(sim, shell):
    shell.run(RUN)
    shell.run("docker exec box bash -c 'echo early-line >> /proc/1/fd/1 2>&1'")
    time.sleep(1.1)
    cut = time.time()
    cut_rfc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int((cut % 1) * 1e9):09d}Z"
    shell.run("docker exec box bash -c '{ echo late-line; echo err-line >&2; } >> /proc/1/fd/1 2>&1'")
    wait_for(lambda: "late-line" in sim.container_log(sim.head.name, "box"))
    rc, out, _ = shell.run("docker logs box")
    assert out.splitlines() == ["early-line", "late-line", "err-line"]
    for since in (cut_rfc, f"{cut:.3f}"):
        rc, out, _ = shell.run(f"docker logs --since {since} box")
        assert "early-line" not in out and "late-line" in out, since
    rc, out, _ = shell.run("docker logs --since 1s box")
    assert "early-line" not in out
    rc, out, _ = shell.run("docker logs --since 30s box")
    assert "early-line" in out
    rc, out, _ = shell.run("docker logs -t --tail 1 box")
    assert out.count("\n") == 1 and out[:4].isdigit() and "Z " in out

    # -f keeps streaming new lines and exits once the container stops.
    client = shell.client(sim.head.name)
    stdin, stdout, _ = client.exec_command(f"docker logs -f --since {cut:.3f} box")
    stdin.channel.shutdown_write()
    shell.run("docker exec -d box bash -c 'sleep 0.3; echo followed-line >> /proc/1/fd/1'")
    time.sleep(0.8)
    t0 = time.time()
    shell.run("docker stop box")
    assert stdout.channel.recv_exit_status() == 0
    assert time.time() - t0 < 3
    text = stdout.read().decode()
    assert "late-line" in text and "followed-line" in text and "early-line" not in text
    rc, _, err = shell.run("docker logs box")
    assert rc == 1 and "No such container: box" in err


def test_image_inspect_and_unknown_image(sim, shell):
    rc, out, _ = shell.run("docker image inspect --format '{{.Id}}' vllm-node")
    assert rc == 0 and out.startswith("sha256:")
    rc, out, err = shell.run("docker run -d --rm --name x nosuch-image sleep 1")
    assert rc == 125 and "Unable to find image 'nosuch-image:latest' locally" in out + err


def test_image_mismatch_refuses_a_two_node_launch(sim, shell):
    sim.set_image(sim.workers[0].name, "vllm-node", "sha256:" + "0" * 64)
    try:
        rc, out, _ = shell.launcher(f"-n {sim.head.ip},{sim.workers[0].ip} -d exec sleep 10")
        assert rc == 1
        assert f"Error: Docker image mismatch on worker node ({sim.workers[0].ip}):" in out
        assert sim.containers(sim.head.name) == []
    finally:
        sim.set_image(sim.workers[0].name, "vllm-node", DEFAULT_IMAGE_ID)


def test_meminfo_drops_while_loaded_and_recovers_gradually(sim, shell, t0):
    def settled():
        first = sim.mem_available_kb(sim.head.name)
        time.sleep(0.25)
        return first if first == sim.mem_available_kb(sim.head.name) else None

    idle = wait_for(settled, timeout=5)  # the previous test's container may still be giving memory back
    rc, out, _ = shell.run("cat $SPARKSIM_MEMINFO")
    assert out.startswith("MemTotal:") and "MemAvailable:" in out
    rc, out, _ = shell.run("grep MemAvailable /proc/meminfo")  # the node's memory, not this machine's
    assert out.split()[1] == str(idle)
    shell.launcher(f"--solo -d exec vllm serve sim/tiny-model --served-model-name t --port {sim.vllm_port}")
    wait_for(
        lambda: sim.records(prog="vllm", event="ready", since=t0) and sim.mem_available_kb(sim.head.name) < idle - 40e6
    )
    shell.launcher("--solo stop")
    just_after = sim.mem_available_kb(sim.head.name)
    assert just_after < idle - 20e6  # memory comes back late
    wait_for(lambda: sim.mem_available_kb(sim.head.name) >= idle - 1000, timeout=5)


# The options every launcher generation passes to `docker run` (privileged and non-privileged).
LAUNCHER_RUN = (
    "docker run --privileged --ulimit nofile=1048576:1048576 --ipc=host -e VLLM_HOST_IP={ip} -e HF_TOKEN "
    "--gpus all -d --rm --network host --name vllm_node --entrypoint= -e NCCL_IGNORE_CPU_AFFINITY=1 "
    "-v $HOME/.cache/huggingface:/root/.cache/huggingface -v $HOME/.cache/vllm:/root/.cache/vllm "
    "vllm-node sleep infinity"
)
LAUNCHER_RUN_UNPRIVILEGED = (
    "docker run --cap-add=IPC_LOCK --ulimit nofile=1048576:1048576 --shm-size=64g --device=/dev/infiniband "
    "--memory 110g --memory-swap 120g --pids-limit 4096 --gpus all -d --rm -p 8000:8000 --name vllm_node "
    "--entrypoint= vllm-node earlyoom -M 524288,102400 -s 100 -r 60"
)


def test_launcher_run_options_and_env_without_value_follows_the_caller(sim, shell):
    worker = sim.workers[0]
    head_cmd = LAUNCHER_RUN.format(ip=sim.head.ip)
    worker_cmd = LAUNCHER_RUN.format(ip=worker.ip)
    # As the launcher does: the head's run sees the exported variable, the worker's goes through ssh.
    rc, out, err = shell.run(f"export HF_TOKEN=secret; {head_cmd} && ssh {worker.ip} '{worker_cmd}'")
    assert rc == 0, err
    for node, expected in ((sim.head, ["HF_TOKEN=secret"]), (worker, [])):
        rc, out, _ = shell.run("docker inspect -f '{{json .Config.Env}}' vllm_node", node=node.name)
        env = json.loads(out)
        assert [e for e in env if e.startswith("HF_TOKEN")] == expected
        assert f"VLLM_HOST_IP={node.ip}" in env
        # The head's $HOME expanded on the head names the same home on the worker (same path on a Spark).
        rc, out, _ = shell.run("docker inspect -f '{{json .Mounts}}' vllm_node", node=node.name)
        sources = {m["Destination"]: m["Source"] for m in json.loads(out)}
        assert sources["/root/.cache/huggingface"] == f"{node.dir}/.cache/huggingface"
    shell.run("docker stop vllm_node")
    rc, _, err = shell.run(LAUNCHER_RUN_UNPRIVILEGED)
    assert rc == 0, err
    rc, out, _ = shell.run("docker top vllm_node")
    assert out.splitlines()[1].endswith("earlyoom -M 524288,102400 -s 100 -r 60")
    assert "earlyoom 1.7" in sim.container_log(sim.head.name, "vllm_node")


def test_a_node_clock_off_by_minutes_shows_in_date_and_docker_logs(sim, shell):
    sim.set_node_env(sim.head.name, "SPARKSIM_CLOCK_OFFSET", "-600")
    try:
        _, out, _ = shell.run("date -u +%s")
        assert abs(int(out) - (time.time() - 600)) < 5
        _, out, _ = shell.run("docker run -d --rm --name clocked vllm-node sh -c 'echo hello; sleep 30'")
        time.sleep(0.5)
        _, ours, _ = shell.run(f"docker logs --since {int(time.time()) - 5} clocked")
        _, theirs, _ = shell.run('docker logs --since "$(( $(date -u +%s) - 5 ))" -t clocked')
        _, relative, _ = shell.run("docker logs --since 1m clocked")
        assert ours.strip() == ""
        stamp, _, line = theirs.strip().partition(" ")
        # The node's clock, not ours, stamps the line (compared as times: a minute may turn between the two reads).
        stamped = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        assert line == "hello" and abs(stamped - (time.time() - 600)) < 30, stamp
        assert relative.strip() == "hello"
    finally:
        shell.run("docker stop clocked")
        sim.set_node_env(sim.head.name, "SPARKSIM_CLOCK_OFFSET", None)


def test_a_stopped_models_memory_always_comes_all_the_way_back(sim, shell):
    """Memory comes back gradually after vLLM exits or its container stops, finished by a helper process: it must
    outlive the container's own processes, which die with the container (a vLLM that failed and exited, its
    container stopped at once, was the case that left memory taken for good)."""
    from sparksim.meminfo import read_meminfo

    def idle() -> bool:
        state = json.loads(open(os.path.join(sim.head.dir, "mem.json")).read())
        return not state.get("loads") and not state.get("releasing")

    sim.stop_containers()
    wait_for(idle, timeout=10)  # what earlier tests left has come back
    before = read_meminfo(sim.head.meminfo_path)["MemFree"]
    for repo in ("sim/oom", "sim/tiny-model", "sim/oom"):
        rc, out, err = shell.launcher(f"--solo -d exec vllm serve {repo} --served-model-name m --port {sim.vllm_port}")
        assert rc == 0, out + err
        if repo == "sim/oom":
            wait_for(lambda: "CUDA out of memory" in sim.container_log(sim.head.name, "vllm_node"), timeout=20)
        else:
            wait_for(lambda: served_models(sim.vllm_port) == ["m"], timeout=20)
        shell.launcher("--solo stop")
        wait_for(lambda: read_meminfo(sim.head.meminfo_path)["MemFree"] == before, timeout=10)
