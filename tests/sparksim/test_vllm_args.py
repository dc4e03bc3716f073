"""The fake vLLM's command line: parsed like vLLM's FlexibleArgumentParser, refused like argparse."""

from __future__ import annotations

import pytest

from sparksim.fake_vllm import UsageError, parse_serve_args
from tests.sparksim.conftest import wait_for


def test_underscores_equals_and_short_aliases():
    model, opts, _ = parse_serve_args(
        ["org/m", "--served_model_name", "a", "b", "--max_model_len=4096", "-tp", "2", "--gpu-memory-utilization=0.5"]
    )
    assert model == "org/m"
    assert opts["--served-model-name"] == ["a", "b"]
    assert opts["--max-model-len"] == "4096" and opts["--tensor-parallel-size"] == 2
    assert opts["--gpu-memory-utilization"] == 0.5
    _, opts, _ = parse_serve_args(["m", "-pp", "2", "-q", "fp8", "-dp=1"])
    assert opts["--pipeline-parallel-size"] == 2 and opts["--quantization"] == "fp8"
    assert opts["--data-parallel-size"] == 1


def test_booleans_json_and_model_option():
    _, opts, _ = parse_serve_args(
        ["m", "--no-enable-prefix-caching", "--enable-auto-tool-choice", "--trust-remote-code"]
    )
    assert opts["--enable-prefix-caching"] is False and opts["--enable-auto-tool-choice"] is True
    assert opts["--trust-remote-code"] is True
    _, opts, _ = parse_serve_args(["m", "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 2}'])
    assert opts["--speculative-config"] == {"method": "ngram", "num_speculative_tokens": 2}
    _, opts, _ = parse_serve_args(["m", "--compilation-config.cudagraph_mode", "FULL"])
    assert opts["--compilation-config"] == {"cudagraph_mode": "FULL"}
    model, opts, warnings = parse_serve_args(["--port", "8001", "--model", "org/x"])
    assert model == "org/x" and opts["--port"] == 8001 and "--model" in warnings[0]


def test_abbreviations_follow_argparse():
    _, opts, _ = parse_serve_args(["m", "--served-model", "x"])  # a unique prefix is accepted
    assert opts["--served-model-name"] == ["x"]
    with pytest.raises(UsageError, match="ambiguous option: --max could match"):
        parse_serve_args(["m", "--max", "3"])


@pytest.mark.parametrize(
    ("argv", "message", "top"),
    [
        (["m", "--foo"], "unrecognized arguments: --foo", True),
        (["m", "--foo", "bar"], "unrecognized arguments: --foo bar", True),
        (["m", "--port", "x"], "argument --port: invalid int value: 'x'", False),
        (["m", "--port"], "argument --port: expected one argument", False),
        (["m", "--speculative-config", '{"method":'], "argument --speculative-config: Value", False),
        (["m", "--distributed-executor-backend", "rey"], "invalid choice: 'rey'", False),
    ],
)
def test_refusals(argv, message, top):
    with pytest.raises(UsageError) as info:
        parse_serve_args(argv)
    assert message in info.value.message and info.value.top is top


@pytest.mark.integration
def test_unknown_flag_in_the_container_exits_2_without_traceback(sim, shell):
    for node in sim.nodes:
        sim.set_node_env(node.name, "SPARKSIM_MEM_RELEASE_SECONDS", "0")
    rc, out, _ = shell.launcher(f"--solo -d exec vllm serve sim/tiny-model --port {sim.vllm_port} --no-such-flag 1")
    assert rc == 0 and "Command dispatched in background" in out

    def log() -> str:
        return sim.container_log(sim.head.name, "vllm_node")

    wait_for(lambda: "vllm: error: unrecognized arguments: --no-such-flag 1" in log())
    text = log()
    assert "usage: vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch} ..." in text
    assert "Traceback" not in text
    assert sim.containers(sim.head.name) == ["vllm_node"]  # PID 1 is sleep infinity
    # The exit status is argparse's 2.
    rc, out, _ = shell.run("docker exec vllm_node vllm serve sim/tiny-model --no-such-flag; echo rc=$?")
    assert "rc=2" in out
    for node in sim.nodes:
        sim.set_node_env(node.name, "SPARKSIM_MEM_RELEASE_SECONDS", None)
