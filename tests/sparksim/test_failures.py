"""Each failure mode of the simulator, asked for by repo id, by set_fail_mode or by SPARKSIM_FAIL."""

from __future__ import annotations

import socket
import time
import urllib.error

import pytest

from tests.sparksim.conftest import http, served_models, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("memory_back_at_once")]


def launch(sim, shell, repo: str, name: str = "m", env: str = "") -> tuple[int, str]:
    rc, out, _ = shell.run(
        f"{env} ~/spark-vllm-docker/launch-cluster.sh --solo -d exec vllm serve {repo} "
        f"--served-model-name {name} --host 0.0.0.0 --port {sim.vllm_port}"
    )
    return rc, out


def log(sim) -> str:
    return sim.container_log(sim.head.name, "vllm_node")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_fail_launch(sim, shell, t0):
    rc, out = launch(sim, shell, "sim/fail-launch")
    assert rc == 1 and "Error:" in out
    assert sim.containers(sim.head.name) == []
    assert sim.records(prog="launch-cluster.sh", since=t0)
    assert not [r for r in sim.records(prog="docker", since=t0) if r["argv"][:1] == ["run"]]


def test_oom(sim, shell, t0):
    rc, _ = launch(sim, shell, "sim/oom")
    assert rc == 0
    wait_for(lambda: "CUDA out of memory" in log(sim))
    text = log(sim)
    assert "Traceback (most recent call last):" in text and "torch.OutOfMemoryError" in text
    wait_for(lambda: not vllm_running(sim))
    assert sim.containers(sim.head.name) == ["vllm_node"]  # like the real one: sleep infinity keeps it
    assert not port_open(sim.vllm_port)
    assert sim.records(prog="vllm", event="port_open", since=t0) == []


def vllm_running(sim) -> bool:
    for pid in sim.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"vllm\0serve" in fh.read():
                    return True
        except OSError:
            continue
    return False


def test_never_ready(sim, shell):
    rc, _ = launch(sim, shell, "sim/never-ready")
    assert rc == 0
    wait_for(lambda: "Loading weights took" in log(sim))
    time.sleep(0.8)
    assert not port_open(sim.vllm_port)
    assert sim.containers(sim.head.name) == ["vllm_node"]
    assert "Application startup complete" not in log(sim)


def test_dies_after_ready(sim, shell):
    rc, _ = launch(sim, shell, "sim/dies-after-ready", name="dying")
    assert rc == 0
    wait_for(lambda: served_models(sim.vllm_port) == ["dying"])
    assert http("GET", f"http://127.0.0.1:{sim.vllm_port}/health")[0] == 200
    wait_for(lambda: http("GET", f"http://127.0.0.1:{sim.vllm_port}/health")[0] == 503, timeout=5)
    assert "EngineDeadError" in log(sim)
    assert served_models(sim.vllm_port) == ["dying"]  # /v1/models still answers


def test_vanish(sim, shell):
    rc, _ = launch(sim, shell, "sim/vanish")
    assert rc == 0
    assert sim.containers(sim.head.name) == ["vllm_node"]
    wait_for(lambda: sim.containers(sim.head.name) == [], timeout=5)
    rc, _, err = shell.run("docker logs vllm_node")
    assert rc == 1 and "No such container" in err
    assert not port_open(sim.vllm_port)


def test_silent_compile(sim, shell):
    sim.set_silent_seconds(1.0)
    try:
        rc, _ = launch(sim, shell, "sim/silent-compile", name="quiet")
        assert rc == 0
        wait_for(lambda: served_models(sim.vllm_port) == ["quiet"], timeout=10)
        with open(f"{sim.head.dir}/containers/vllm_node/log", "rb") as fh:
            # Lines end at newlines only: a tqdm bar's carriage returns stay inside its line.
            stamps = [float(line.split(b" ", 1)[0]) for line in fh.read().split(b"\n") if line]
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert max(gaps) >= 0.95
    finally:
        sim.set_silent_seconds(3.0)


def test_wedged(sim, shell):
    rc, _ = launch(sim, shell, "sim/tiny-model", name="stuck", env="SPARKSIM_FAIL=wedged")
    assert rc == 0
    wait_for(lambda: served_models(sim.vllm_port) == ["stuck"])
    assert http("GET", f"http://127.0.0.1:{sim.vllm_port}/health")[0] == 200
    with pytest.raises((TimeoutError, urllib.error.URLError, socket.timeout)):
        http(
            "POST",
            f"http://127.0.0.1:{sim.vllm_port}/v1/completions",
            {"model": "stuck", "prompt": "hi", "max_tokens": 1},
            timeout=0.5,
        )
    _, metrics = http("GET", f"http://127.0.0.1:{sim.vllm_port}/metrics")
    assert 'vllm:num_requests_running{engine="0",model_name="stuck"} 1.0' in metrics
    assert 'vllm:generation_tokens_total{engine="0",model_name="stuck"} 0.0' in metrics


def test_forced_mode_applies_to_any_model(sim, shell):
    sim.set_fail_mode("oom")
    rc, _ = launch(sim, shell, "sim/tiny-model")
    assert rc == 0
    wait_for(lambda: "CUDA out of memory" in log(sim))
    shell.launcher("--solo stop")
    sim.set_fail_mode("fail-launch")
    rc, out = launch(sim, shell, "sim/tiny-model")
    assert rc == 1
    sim.set_fail_mode(None)
    sim.set_node_env(sim.head.name, "SPARKSIM_FAIL", "never-ready")
    try:
        rc, _ = launch(sim, shell, "sim/tiny-model")
        wait_for(lambda: "init engine (profile, create kv cache, warmup model) took" in log(sim))
        assert not port_open(sim.vllm_port)
        shell.launcher("--solo stop")
    finally:
        sim.set_node_env(sim.head.name, "SPARKSIM_FAIL", None)
    rc, _ = launch(sim, shell, "sim/tiny-model", name="fine")
    wait_for(lambda: served_models(sim.vllm_port) == ["fine"])
    with pytest.raises(ValueError):
        sim.set_fail_mode("nonsense")


def test_port_in_use_fails_early(sim, shell, t0):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", sim.vllm_port))
        busy.listen()
        rc, _ = launch(sim, shell, "sim/tiny-model")
        assert rc == 0
        wait_for(lambda: "Address already in use" in log(sim))
    assert sim.records(prog="vllm", event="port_open", since=t0) == []
