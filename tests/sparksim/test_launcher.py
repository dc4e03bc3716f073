"""The simulated nodes over SSH and the fake launch-cluster.sh, driven as the control plane drives it."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from http.client import HTTPConnection

import pytest

from sparksim.cluster import free_port
from tests.sparksim.conftest import http, served_models, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("memory_back_at_once")]


def nodes_arg(sim) -> str:
    return ",".join(node.ip for node in sim.nodes)


def serve_args(sim, repo: str, name: str, extra: str = "", port: int | None = None) -> str:
    return (
        f"-n {nodes_arg(sim)} -d exec vllm serve {repo} --served-model-name {name} --host 0.0.0.0 "
        f"--port {port or sim.vllm_port} {extra}"
    ).strip()


def test_session_environment_is_the_nodes(sim, shell):
    for node in sim.nodes:
        rc, out, _ = shell.run(
            "echo $HOME; echo $PATH; echo $SPARKSIM_NODE; echo $SPARKSIM_IP; "
            "ls -d $HOME/.cache/huggingface/hub/models--sim--tiny-model; command -v docker vllm",
            node=node.name,
        )
        home, path, name, ip, cache, docker, vllm = out.split()
        assert rc == 0
        assert home == node.dir
        assert path.startswith(f"{node.dir}/bin:")
        assert (name, ip) == (node.name, node.ip)
        assert cache.endswith("models--sim--tiny-model")
        assert docker == f"{node.dir}/bin/docker" and vllm == f"{node.dir}/bin/vllm"
    # The OpenSSH client works with the generated known_hosts file too.
    proc = subprocess.run(sim.ssh_argv(sim.head, "echo $HOME"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == sim.head.dir
    assert sim.launcher_path == f"{sim.head.dir}/spark-vllm-docker/launch-cluster.sh"
    with open(f"{sim.root}/cluster.json") as fh:
        assert json.load(fh) == sim.as_json()


def test_help_lists_the_options_of_the_generation(sim, shell):
    rc, out, _ = shell.launcher("--help")
    assert rc == 1  # the real usage() exits 1
    assert out.startswith("Usage: ./launch-cluster.sh ")
    for option in ("--launch-script", "--solo", "--ray", "--no-ray", "--config", "-v, --volume"):
        assert f"\n  {option} " in out, option
    sim.set_launcher_version("old")
    try:
        rc, out, _ = shell.launcher("--help")
        assert rc == 1 and "Usage:" in out
        assert "\n  --launch-script " in out and "\n  --solo " in out
        assert "--ray" not in out and "--config" not in out
    finally:
        sim.set_launcher_version(None)
    rc, out, _ = shell.run("SPARKSIM_LAUNCHER_VERSION=2026-03-13 ~/spark-vllm-docker/launch-cluster.sh --help")
    assert "\n  --no-ray " in out and "\n  --ray " not in out and "--config" not in out


def test_exec_daemon_serves_the_model_after_the_load_delay(sim, shell, t0):
    sim.set_load_seconds(0.6)
    started = time.time()
    rc, out, _ = shell.launcher(serve_args(sim, "sim/tiny-model", "tiny", "-tp 2"))
    assert rc == 0, out
    assert "Command dispatched in background (Daemon mode). Container: vllm_node" in out
    assert served_models(sim.vllm_port) == []  # dispatched, not loaded
    assert sim.containers(sim.head.name) == ["vllm_node"]
    assert sim.containers(sim.workers[0].name) == ["vllm_node"]
    wait_for(lambda: served_models(sim.vllm_port) == ["tiny"], timeout=10)
    assert time.time() - started >= 0.6

    status, _ = http("GET", f"http://127.0.0.1:{sim.vllm_port}/health")
    assert status == 200
    status, text = http(
        "POST",
        f"http://127.0.0.1:{sim.vllm_port}/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert status == 200 and json.loads(text)["choices"][0]["message"]["content"]
    status, text = http("POST", f"http://127.0.0.1:{sim.vllm_port}/v1/completions", {"model": "other", "prompt": "hi"})
    assert status == 404

    # Streaming: SSE chunks spaced in time, then [DONE]; metrics count the tokens.
    conn = HTTPConnection("127.0.0.1", sim.vllm_port, timeout=5)
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps({"model": "tiny", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}),
        {"content-type": "application/json"},
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    read_start = time.time()
    events = [line for line in resp.read().decode().splitlines() if line.startswith("data: ")]
    assert time.time() - read_start >= 0.15
    assert events[-1] == "data: [DONE]" and len(events) == 6  # role chunk + 4 tokens + DONE
    conn.close()
    _, metrics = http("GET", f"http://127.0.0.1:{sim.vllm_port}/metrics")
    assert 'vllm:num_requests_running{engine="0",model_name="tiny"} 0.0' in metrics
    assert 'vllm:generation_tokens_total{engine="0",model_name="tiny"} 7.0' in metrics

    # The worker rank logs like a rank and binds nothing.
    rc, out, _ = shell.run("docker logs vllm_node", node=sim.workers[0].name)
    assert "--headless" not in out and "rank 1" in out and "Uvicorn" not in out

    # Records: the launcher's argv as received, docker on both nodes, port_open and ready of vLLM.
    launches = sim.records(prog="launch-cluster.sh")
    assert launches[-1]["argv"][-9:] == [
        "sim/tiny-model",
        "--served-model-name",
        "tiny",
        "--host",
        "0.0.0.0",
        "--port",
        str(sim.vllm_port),
        "-tp",
        "2",
    ]
    assert launches[-1]["node"] == sim.head.name and launches[-1]["t"] >= started - 1
    docker_nodes = {r["node"] for r in sim.records(prog="docker", since=t0) if r["argv"][:1] == ["run"]}
    assert docker_nodes == {sim.head.name, sim.workers[0].name}
    opened = sim.records(prog="vllm", event="port_open")
    assert opened[-1]["port"] == sim.vllm_port and opened[-1]["node"] == sim.head.name
    assert sim.records(prog="vllm", event="ready")[-1]["t"] >= opened[-1]["t"]
    worker_vllm = [r for r in sim.records(prog="vllm") if r["node"] == sim.workers[0].name]
    assert "--headless" in worker_vllm[-1]["argv"]


def test_second_exec_reuses_the_running_containers(sim, shell, t0):
    # Two engines share each node's memory: each asks for 40 % of it.
    rc, out, _ = shell.launcher(serve_args(sim, "sim/tiny-model", "first", "-tp 2 --gpu-memory-utilization 0.4"))
    assert rc == 0
    wait_for(lambda: served_models(sim.vllm_port) == ["first"])
    other_port = free_port()  # not a neighbour of vllm_port: another test's server may hold that one
    rc, out, _ = shell.launcher(
        serve_args(sim, "sim/big-model", "second", "-tp 2 --gpu-memory-utilization 0.4", port=other_port)
    )
    assert rc == 0
    assert "Cluster containers are already running. Skipping launch." in out
    # The second vLLM runs inside the old container, next to the first one.
    try:
        wait_for(lambda: served_models(other_port) == ["second"], timeout=20)
    except AssertionError as err:
        log = shell.run("docker logs vllm_node")[1]
        raise AssertionError(f"the second engine did not serve; its container log:\n{log}") from err
    assert served_models(sim.vllm_port) == ["first"]
    assert len([r for r in sim.records(prog="docker", since=t0) if r["argv"][:1] == ["run"]]) == 2
    rc, out, _ = shell.run("docker logs vllm_node")
    assert "sim/big-model" in out and "sim/tiny-model" in out


def test_local_ip_must_be_in_the_node_list(sim, shell):
    rc, out, _ = shell.launcher(f"-n 10.9.9.9,{sim.workers[0].ip} -d exec vllm serve sim/tiny-model --port 1")
    assert rc == 1
    assert f"Error: Local IP ({sim.head.ip}) is not in the list of nodes (10.9.9.9,{sim.workers[0].ip})." in out
    assert sim.containers(sim.head.name) == [] and sim.containers(sim.workers[0].name) == []


def test_parallelism_needs_enough_nodes(sim, shell):
    rc, out, _ = shell.launcher(serve_args(sim, "sim/tiny-model", "t", "-tp 2 --pipeline-parallel-size=2"))
    assert rc == 1
    assert "Error: Command requires 4 nodes (tp=2 * pp=2 * dp=1) but only 2 node(s) are configured." in out
    assert sim.containers(sim.head.name) == []
    # Fewer ranks than nodes: the launcher uses only the head.
    rc, out, _ = shell.launcher(serve_args(sim, "sim/tiny-model", "t", "-tp 1"))
    assert rc == 0 and "using 1 of 2 configured node(s)" in out
    assert sim.containers(sim.head.name) == ["vllm_node"] and sim.containers(sim.workers[0].name) == []


def test_status_and_stop_on_both_nodes(sim, shell):
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} status")
    assert rc == 0
    assert f"[HEAD] {sim.head.ip}: Container 'vllm_node' is NOT running." in out
    assert f"[WORKER] {sim.workers[0].ip}: Container 'vllm_node' is NOT running." in out
    rc, out, _ = shell.launcher(serve_args(sim, "sim/tiny-model", "tiny", "-tp 2"))
    assert rc == 0
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} status")
    assert f"[HEAD] {sim.head.ip}: Container 'vllm_node' is RUNNING." in out
    assert f"[WORKER] {sim.workers[0].ip}: Container 'vllm_node' is RUNNING." in out
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} stop")
    assert rc == 0 and "Cluster stopped." in out
    assert sim.containers(sim.head.name) == [] and sim.containers(sim.workers[0].name) == []
    assert served_models(sim.vllm_port) == []
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} stop")  # nothing running: still exit 0
    assert rc == 0 and "Cluster stopped." in out


def test_config_file_and_solo(sim, shell):
    env_file = f"{sim.head.dir}/spark-vllm-docker/cluster.env"
    with open(env_file, "w") as fh:
        fh.write(f"CLUSTER_NODES={nodes_arg(sim)}\nCONTAINER_NAME=from_env\nCONTAINER_FOO=bar\n")
    rc, out, _ = shell.launcher(f"--config {env_file} -d exec sleep 30")
    assert rc == 0, out
    assert "Adding container env: FOO" in out
    assert sim.containers(sim.head.name) == ["from_env"] and sim.containers(sim.workers[0].name) == ["from_env"]
    rc, out, _ = shell.run("docker exec from_env bash -c 'echo $FOO'")
    assert out.strip() == "bar"
    rc, out, _ = shell.launcher(f"--config {env_file} stop")
    assert rc == 0 and sim.containers(sim.head.name) == []
    rc, out, _ = shell.launcher("--solo -d exec sleep 30")
    assert rc == 0 and "Solo mode enabled" in out
    assert sim.containers(sim.head.name) == ["vllm_node"] and sim.containers(sim.workers[0].name) == []
    rc, out, _ = shell.launcher("--config /nonexistent.env status")
    assert rc == 1 and "Error: Config file not found: /nonexistent.env" in out


def test_foreground_exec_stops_the_cluster_when_it_ends(sim, shell):
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} exec echo hello-from-container")
    assert rc == 0
    assert "hello-from-container" in out and "Cluster stopped." in out
    assert sim.containers(sim.head.name) == [] and sim.containers(sim.workers[0].name) == []


def test_missing_mount_fails_docker_run_but_the_launcher_goes_on(sim, shell):
    # The real script does not check `docker run`: the exec that follows fails too, and it still says dispatched.
    extra = "VLLM_SPARK_EXTRA_DOCKER_ARGS='-v /nonexistent/sparksim-model:/nonexistent/sparksim-model:ro'"
    rc, out, err = shell.run(
        f"{extra} ~/spark-vllm-docker/launch-cluster.sh {serve_args(sim, '/nonexistent/sparksim-model', 'x')}"
    )
    assert rc == 0
    assert "bind source path does not exist: /nonexistent/sparksim-model" in out + err
    assert "No such container: vllm_node" in out + err
    assert "Command dispatched in background (Daemon mode)." in out
    assert sim.containers(sim.head.name) == []


def test_local_model_served_through_a_mount(sim, shell):
    path = sim.make_local_model("ten31-v2")
    assert path == f"{sim.root}/models/ten31-v2"
    extra = shlex.quote(f"-v {path}:{path}:ro")
    rc, out, _ = shell.run(
        f"VLLM_SPARK_EXTRA_DOCKER_ARGS={extra} ~/spark-vllm-docker/launch-cluster.sh {serve_args(sim, path, 'ten31')}"
    )
    assert rc == 0, out
    wait_for(lambda: served_models(sim.vllm_port) == ["ten31"])
    rc, out, _ = shell.run("docker inspect vllm_node")
    mounts = json.loads(out)[0]["Mounts"]
    assert any(m["Source"] == path and m["Destination"] == path and m["RW"] is False for m in mounts)


def test_local_model_not_mounted_crashes_vllm(sim, shell):
    path = sim.make_local_model("unmounted")
    rc, out, _ = shell.launcher(serve_args(sim, path, "unmounted"))
    assert rc == 0  # dispatched
    wait_for(lambda: "Traceback" in sim.container_log(sim.head.name, "vllm_node"))
    assert sim.containers(sim.head.name) == ["vllm_node"]  # the container stays, sleep infinity
    assert served_models(sim.vllm_port) == []


def test_secret_on_stdin_reaches_the_container_not_argv(sim, shell):
    rc, out, _ = shell.run(
        "read -r HF_TOKEN; export HF_TOKEN; ~/spark-vllm-docker/launch-cluster.sh -e HF_TOKEN "
        + serve_args(sim, "sim/tiny-model", "tiny"),
        stdin="hf_sekret123\n",
    )
    assert rc == 0, out
    rc, out, _ = shell.run("docker exec vllm_node bash -c 'echo $HF_TOKEN'")
    assert out.strip() == "hf_sekret123"
    rc, out, _ = shell.run("docker exec -i vllm_node cat", stdin="piped through\n")
    assert out == "piped through\n"
    assert all("hf_sekret123" not in json.dumps(r["argv"]) for r in sim.records())


def test_ray_mode_adds_the_backend_and_serves(sim, shell):
    rc, out, err = shell.launcher(f"--ray {serve_args(sim, 'sim/tiny-model', 'r', '-tp 2')}")
    assert rc == 0, out
    assert "Adding --distributed-executor-backend ray for Ray mode." in err
    wait_for(lambda: served_models(sim.vllm_port) == ["r"])
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} --ray status")
    assert "--- Ray Status ---" in out and "Failed to get ray status." not in out


def test_launch_script_gets_the_rank_flags_on_each_node(sim, shell):
    script = f"{sim.head.dir}/spark-vllm-docker/examples/tiny.sh"
    with open(script, "w") as fh:
        fh.write(
            f"vllm serve sim/tiny-model \\\n  --served-model-name scripted --port {sim.vllm_port} \\\n  -tp 2 \\\n"
        )
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} -d --launch-script tiny")
    assert rc == 0, out
    assert "Command dispatched in background (Daemon mode)." in out
    wait_for(lambda: served_models(sim.vllm_port) == ["scripted"])
    worker_argv = [r["argv"] for r in sim.records(prog="vllm") if r["node"] == sim.workers[0].name][-1]
    assert worker_argv[-1] == "--headless" and "--node-rank" in worker_argv


def test_old_launcher_runs_exec_in_the_foreground_despite_d(sim, shell):
    sim.set_launcher_version("old")
    try:
        started = time.time()
        rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} -d exec bash -c 'echo in-foreground; sleep 0.5'")
        assert rc == 0 and time.time() - started >= 0.5
        assert "in-foreground" in out and "Command dispatched" not in out and "Cluster stopped." in out
        assert sim.containers(sim.head.name) == []
    finally:
        sim.set_launcher_version(None)


def test_served_names_survive_quoting_and_can_be_several(sim, shell):
    odd = "we ird$(x) 'q'"
    rc, out, _ = shell.launcher(
        f"--solo -d exec vllm serve sim/tiny-model --served-model-name {shlex.quote(odd)} other --port {sim.vllm_port}"
    )
    assert rc == 0, out
    wait_for(lambda: served_models(sim.vllm_port) == [odd, "other"])
