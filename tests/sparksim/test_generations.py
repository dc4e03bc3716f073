"""The fake launcher's generations: what each real launch-cluster.sh did to a swap, failure modes first."""

from __future__ import annotations

import contextlib
import os
import shlex

import pytest

from sparksim.fake_docker import DEFAULT_IMAGE_ID
from sparksim.fake_launcher import GENERATIONS, write_launcher_env
from tests.sparksim.conftest import served_models, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("memory_back_at_once")]

JSON_FLAG = '--speculative-config \'{"method": "ngram", "num_speculative_tokens": 2}\''


@contextlib.contextmanager
def generation(sim, version: str):
    sim.set_launcher_version(version)
    try:
        yield
    finally:
        sim.set_launcher_version(None)


def nodes_arg(sim) -> str:
    return ",".join(node.ip for node in sim.nodes)


def log(sim, node=None) -> str:
    return sim.container_log((node or sim.head).name, "vllm_node")


def serve(sim, name: str, extra: str = "") -> str:
    return f"vllm serve sim/tiny-model --served-model-name {name} --host 0.0.0.0 --port {sim.vllm_port} {extra}".strip()


def test_help_of_each_generation(sim, shell):
    expected = {
        "2026-02-04": ({"--launch-script", "--solo"}, {"--no-ray", "--ray", "--config", "--no-cache-dirs"}),
        "2026-02-26": ({"--no-cache-dirs", "--non-privileged"}, {"--no-ray", "--ray", "--config"}),
        "2026-03-04": ({"--launch-script"}, {"--no-ray", "--config"}),
        "2026-03-13": ({"--no-ray"}, {"--ray", "--config", "--master-port"}),
        "2026-03-25": ({"--no-ray", "--config", "--master-port"}, {"--ray", "-v, --volume"}),
        "2026-08-10": ({"--ray", "--no-ray", "--config", "-v, --volume"}, set()),
    }
    for version in GENERATIONS:
        rc, out, _ = shell.run(f"SPARKSIM_LAUNCHER_VERSION={version} ~/spark-vllm-docker/launch-cluster.sh --help")
        assert rc == 1 and out.startswith("Usage: ./launch-cluster.sh "), version
        present, absent = expected[version]
        for option in present:
            assert f"\n  {option} " in out, (version, option)
        for option in absent:
            assert f"\n  {option} " not in out, (version, option)
    _, new, _ = shell.launcher("--help")
    _, mid, _ = shell.run("SPARKSIM_LAUNCHER_VERSION=2026-03-13 ~/spark-vllm-docker/launch-cluster.sh --help")
    no_ray_line = [line for line in new.splitlines() if line.startswith("  --no-ray ")][0]
    assert "default" in no_ray_line.lower() and "compatib" in no_ray_line
    assert "default" not in [line for line in mid.splitlines() if line.startswith("  --no-ray ")][0].lower()


def test_every_action_selects_nodes(sim, shell):
    # No --solo, -n or .env: discovery needs CX7 links up (a Spark without a cable has none).
    sim.set_node_env(sim.head.name, "SPARKSIM_CX7_LINKS", "0")
    try:
        for version in ("2026-02-04", "2026-08-10"):
            with generation(sim, version):
                rc, out, _ = shell.launcher("stop")
                assert rc == 1 and "Error: No active IB interfaces found." in out, version
                rc, out, _ = shell.launcher("--solo stop")
                assert rc == 0 and "Cluster stopped." in out and "Head Node: 127.0.0.1" in out
    finally:
        sim.set_node_env(sim.head.name, "SPARKSIM_CX7_LINKS", None)
    sim.set_node_env(sim.head.name, "SPARKSIM_CX7_LINKS", "3")
    try:
        rc, out, _ = shell.launcher("status")  # the third link up has no address
        assert rc == 1 and "Error: Interface enp1s0f0np0 (enp*, no capital P) is Up but has no IP address" in out
    finally:
        sim.set_node_env(sim.head.name, "SPARKSIM_CX7_LINKS", None)
    # With links up and no node list, it acts on every GB10 of the /24.
    rc, out, _ = shell.launcher("status")
    assert rc == 0 and f"Found GB10 peer: {sim.workers[0].ip}" in out
    assert f"[WORKER] {sim.workers[0].ip}: Container 'vllm_node' is NOT running." in out
    rc, out, _ = shell.launcher(f"-n 10.9.9.1,{sim.workers[0].ip} stop")
    assert rc == 1 and f"Error: Local IP ({sim.head.ip}) is not in the list of nodes" in out


def test_check_config_prints_without_launching(sim, shell, t0):
    for version in ("2026-02-04", "2026-08-10"):
        with generation(sim, version):
            rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} --check-config")
            assert rc == 0 and "Container Name: vllm_node" in out and "Configuration Check Complete." in out
    assert not [r for r in sim.records(prog="docker", since=t0) if r["argv"][:1] == ["run"]]


def test_oldest_exec_runs_in_the_foreground_and_stops_the_cluster(sim, shell):
    with generation(sim, "old"):
        rc, out, _ = shell.launcher(f"--solo -d exec {serve(sim, 'fg')} --no-such-flag")
        assert rc == 2  # vLLM's argparse exit, returned by the foreground exec
        assert "Command dispatched" not in out and "Cluster stopped." in out
        assert sim.containers(sim.head.name) == []
        # Unknown words start an exec command in this generation: --config is not an option yet.
        rc, out, _ = shell.launcher("--solo --config x.env")
        assert "Action: exec" in out and "Cluster stopped." in out


def test_daemon_dispatch_and_unknown_arguments_from_02_26(sim, shell):
    with generation(sim, "2026-02-26"):
        rc, out, _ = shell.launcher("--solo --config x.env stop")
        assert rc == 1 and "Error: Unknown argument or action: --config" in out and "Usage:" in out
        rc, out, _ = shell.launcher(f"--solo -d exec {serve(sim, 'd')}")
        assert rc == 0 and "Command dispatched in background (Daemon mode). Container: vllm_node" in out
        wait_for(lambda: served_models(sim.vllm_port) == ["d"])


def test_json_flags_are_word_split_before_03_04(sim, shell):
    with generation(sim, "2026-02-26"):
        rc, _, _ = shell.launcher(f"--solo -d exec {serve(sim, 'j')} {JSON_FLAG}")
        assert rc == 0
        wait_for(lambda: "vllm serve: error: argument --speculative-config" in log(sim))
        assert "Traceback" not in log(sim)
        shell.launcher("--solo stop")
    with generation(sim, "2026-03-04"):
        rc, _, _ = shell.launcher(f"--solo -d exec {serve(sim, 'j')} {JSON_FLAG}")
        wait_for(lambda: served_models(sim.vllm_port) == ["j"])


def test_a_secrets_wrapper_works_where_the_text_survives(sim, shell):
    # A host path the fake docker leaves alone (it maps /tmp, /root and /workspace into the container).
    secret = f"/dev/shm/sparksim-secret-{os.getpid()}.env"

    def wrapped(name: str) -> str:
        script = f'. {secret} && rm -f {secret} && exec "$@"'
        return f"sh -c {shlex.quote(script)} spark-control {serve(sim, name)}"

    shell.run(f"echo export SPARK_SECRET=1 > {secret}")
    with generation(sim, "2026-02-26"):
        rc, out, _ = shell.launcher(f"--solo -d exec {wrapped('s')}")
        assert rc == 0 and "Command dispatched" in out
        wait_for(lambda: log(sim).strip() != "")
        assert served_models(sim.vllm_port) == [] and "vLLM API server" not in log(sim)
        shell.launcher("--solo stop")
    shell.run(f"echo export SPARK_SECRET=1 > {secret}")
    with generation(sim, "2026-03-04"):
        shell.launcher(f"--solo -d exec {wrapped('s')}")
        wait_for(lambda: served_models(sim.vllm_port) == ["s"])
    assert shell.run(f"test -e {secret}; echo $?")[1].strip() == "1"  # the wrapper removed it


def test_ray_default_of_03_13_gives_vllm_no_backend(sim, shell):
    with generation(sim, "2026-03-13"):
        rc, out, err = shell.launcher(f"-n {nodes_arg(sim)} -d exec {serve(sim, 'r', '-tp 2')}")
        assert rc == 0, out
        assert "Starting Ray HEAD node" in out and "Adding --distributed-executor-backend" not in err
        wait_for(lambda: "World size (2) is larger than the number of available GPUs (1)" in log(sim))
        shell.launcher(f"-n {nodes_arg(sim)} stop")
        rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} --no-ray -d exec {serve(sim, 'nr', '-tp 2')}")
        assert rc == 0 and "Launching worker (rank 1)" in out
        wait_for(lambda: served_models(sim.vllm_port) == ["nr"])
        worker = [r["argv"] for r in sim.records(prog="vllm") if r["node"] == sim.workers[0].name][-1]
        assert worker[-1] == "--headless" and "--master-port" not in worker  # 03-25 added --master-port
        assert "Worker_TP1" in log(sim, sim.workers[0])


def test_newest_backend_options(sim, shell):
    rc, out, _ = shell.launcher(f"--solo --ray -d exec {serve(sim, 'x')}")
    assert rc == 1 and "Error: --ray is incompatible with --solo" in out
    rc, out, _ = shell.launcher(f"--solo --no-ray -d exec {serve(sim, 'x')}")
    assert rc == 1 and "Error: --no-ray is incompatible with --solo" in out
    with generation(sim, "2026-03-25"):
        rc, out, _ = shell.launcher("--solo --no-ray stop")
        assert rc == 0 and "--no-ray has no effect in solo mode" in out
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} -d exec {serve(sim, 'x', '-tp 4')}")
    assert rc == 1 and "Command requires 4 nodes (tp=4 * pp=1 * dp=1) but only 2 node(s) are configured." in out
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} -d")
    assert rc == 1 and "Error: No action specified." in out


def test_env_file_renames_the_container_from_03_25(sim, shell):
    write_launcher_env(sim.head.dir, {"CONTAINER_NAME": "renamed", "CONTAINER_SIM_FLAG": "on"})
    try:
        rc, out, _ = shell.launcher("--solo --check-config")
        assert rc == 0 and "Container Name: renamed" in out and "Adding container env: SIM_FLAG" in out
        with generation(sim, "2026-03-13"):
            rc, out, _ = shell.launcher("--solo --check-config")
            assert "Container Name: vllm_node" in out
        rc, out, _ = shell.launcher(f"--solo -d exec {serve(sim, 'n')}")
        assert "Container: renamed" in out
        wait_for(lambda: served_models(sim.vllm_port) == ["n"])
        assert sim.containers(sim.head.name) == ["renamed"]
        assert shell.run("docker exec renamed bash -c 'echo $SIM_FLAG'")[1].strip() == "on"
        shell.launcher("--solo stop")
        assert sim.containers(sim.head.name) == []
    finally:
        write_launcher_env(sim.head.dir, None)


def test_env_var_without_value_reaches_only_the_head(sim, shell):
    rc, out, _ = shell.run(
        f"SIM_ONLY_HERE=yes ~/spark-vllm-docker/launch-cluster.sh -e SIM_ONLY_HERE -n {nodes_arg(sim)} start -d"
    )
    assert rc == 0, out
    assert shell.run("docker exec vllm_node bash -c 'echo ${SIM_ONLY_HERE:-unset}'")[1].strip() == "yes"
    worker = sim.workers[0].name
    assert shell.run("docker exec vllm_node bash -c 'echo ${SIM_ONLY_HERE:-unset}'", node=worker)[1].strip() == "unset"


def test_newest_refuses_different_images(sim, shell):
    sim.set_image(sim.workers[0].name, "vllm-node", "sha256:" + "0" * 64)
    try:
        rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} -d exec {serve(sim, 'x', '-tp 2')}")
        assert rc == 1 and "Error: Cluster launch aborted because image 'vllm-node' is not in sync." in out
        assert sim.containers(sim.head.name) == []
        with generation(sim, "2026-03-25"):
            rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} start -d")
            assert rc == 0 and "image consistency" not in out
    finally:
        sim.set_image(sim.workers[0].name, "vllm-node", DEFAULT_IMAGE_ID)


def test_running_cluster_is_reused(sim, shell):
    shell.launcher(f"-n {nodes_arg(sim)} start -d")
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} status")
    assert f"[HEAD] {sim.head.ip}: Container 'vllm_node' is RUNNING." in out
    rc, out, _ = shell.launcher(f"-n {nodes_arg(sim)} start -d")
    assert "Cluster containers are already running. Skipping launch." in out
