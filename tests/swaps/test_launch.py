import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.models import ModelEntry
from cluster.models import ClusterSettings, SparkHost
from swaps.launch import CommandBuildError, build_launch_command, quote_arg, remote_path, vllm_argv

HOSTILE = [
    "a b",
    "it's",
    'say "hi"',
    "$(touch /tmp/pwned)",
    "`id`",
    "x; rm -rf /",
    "line1\nline2",
    "ünïcødé ✓",
    "--flag=$HOME",
    "*",
    "~",
    "-",
    "",
]


def _bash_argv(words: str) -> list[str]:
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {words}"], capture_output=True, check=True).stdout
    return out.decode().split("\0")[:-1]


@pytest.mark.parametrize("value", HOSTILE)
def test_quote_arg_round_trips_through_a_shell(value):
    assert _bash_argv(quote_arg(value)) == [value]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
def test_quote_arg_round_trips_any_text(value):
    assert _bash_argv(quote_arg(value)) == [value]


def test_nul_is_refused():
    with pytest.raises(CommandBuildError):
        quote_arg("a\x00b")


def test_home_paths_keep_expansion_but_nothing_else_expands():
    assert _bash_argv(remote_path("~/spark vllm/launch.sh"))[0].endswith("/spark vllm/launch.sh")
    assert not _bash_argv(remote_path("~/x"))[0].startswith("~")
    assert _bash_argv(remote_path("/opt/$(id)/l.sh")) == ["/opt/$(id)/l.sh"]


def _entry(**fields):
    defaults = {"key": "m", "name": "m", "repo": "org/m", "nodes": 1}
    return ModelEntry(**{**defaults, **fields})


def _hosts():
    return [
        SparkHost(name="head", address="127.0.0.1", cluster_ip="10.0.0.1", role="head"),
        SparkHost(name="w", address="127.0.0.2", cluster_ip="10.0.0.2", role="worker"),
    ]


def test_vllm_argv_owns_port_host_and_name():
    cluster = ClusterSettings(vllm_port=8000)
    argv = vllm_argv(entry=_entry(nodes=2, max_model_len=4096, vllm_args=["--enforce-eager"]), cluster=cluster)
    assert argv[:5] == ["vllm", "serve", "org/m", "--served-model-name", "m"]
    assert argv[argv.index("--port") + 1] == "8000" and argv[argv.index("-tp") + 1] == "2"
    assert argv[-1] == "--enforce-eager" and "--max-model-len" in argv


def test_launch_command_shapes():
    cluster = ClusterSettings()
    solo = build_launch_command(entry=_entry(), cluster=cluster, nodes=_hosts()[:1]).command
    assert " --solo -d exec vllm serve " in solo and "--name vllm_node" in solo
    pair = build_launch_command(entry=_entry(nodes=2), cluster=cluster, nodes=_hosts()).command
    assert " -n 10.0.0.1,10.0.0.2 -d exec " in pair
    local = build_launch_command(entry=_entry(repo="", local_path="/models/x"), cluster=cluster, nodes=_hosts()[:1])
    assert local.command.startswith("VLLM_SPARK_EXTRA_DOCKER_ARGS='-v /models/x:/models/x:ro' exec ")


def test_secrets_go_to_stdin_never_to_the_command():
    launch = build_launch_command(
        entry=_entry(), cluster=ClusterSettings(), nodes=_hosts()[:1], secrets={"HF_TOKEN": "hf_s3cret"}
    )
    assert "hf_s3cret" not in launch.command
    assert launch.stdin == "hf_s3cret\n"
    assert "-e HF_TOKEN " in launch.command and "read -r HF_TOKEN" in launch.command


def test_hostile_flags_arrive_as_one_argument_each(tmp_path):
    """The launcher re-quotes exec arguments with printf %q; imitate that and check the container's argv."""
    fake = tmp_path / "launcher"
    fake.write_text(
        '#!/bin/bash\nwhile [[ "$1" != exec ]]; do shift; done; shift\n'
        'CMD=$(printf "%q " "$@")\nbash -c "printf \'%s\\0\' $CMD"\n'
    )
    fake.chmod(0o755)
    entry = _entry(vllm_args=["--chat-template", *HOSTILE[:-1]])
    cluster = ClusterSettings(launcher_path=str(fake))
    command = build_launch_command(entry=entry, cluster=cluster, nodes=_hosts()[:1]).command
    out = subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout.decode()
    assert out.split("\0")[:-1] == vllm_argv(entry=entry, cluster=cluster)
