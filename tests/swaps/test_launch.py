import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.models import ModelEntry
from cluster.models import ClusterSettings, SparkHost
from swaps.launch import (
    LAUNCHER_MISSING,
    MARKERS_SEPARATOR,
    CommandBuildError,
    LauncherCapabilities,
    build_capabilities_command,
    build_check_config_command,
    build_launch_command,
    build_secrets_write_command,
    build_stop_command,
    effective_container_name,
    launcher_errors,
    quote_arg,
    remote_path,
    secrets_file_text,
    secrets_path_in_container,
    vllm_argv,
    vllm_running,
)

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


# Help texts in the shape of each launcher generation (our words; the option names and layout are what matter).
HELP_2026_02 = """Usage: ./launch-cluster.sh [-n <node_ips>] [--solo] [-d] [action] [command]
  -n, --nodes     node IPs
  --launch-script script to run in the container
  --solo          one node
  -d              daemon mode
"""
HELP_RAY_DEFAULT = HELP_2026_02 + "  --no-ray        run multi-node without Ray\n"
HELP_CONFIG = HELP_RAY_DEFAULT + "  --config        a .env file\n"
HELP_NO_RAY_DEFAULT = """Usage: ./launch-cluster.sh [-n <node_ips>] [--solo] [--ray|--no-ray] [-d] [action] [command]
  -n, --nodes     node IPs
  --launch-script script to run in the container
  --solo          one node
  --ray           use Ray for multi-node
  --no-ray        the default for multi-node (accepted for compatibility)
  --config        a .env file
"""
BOTH_MARKERS = f"{MARKERS_SEPARATOR}\nCommand dispatched in background\n%q\n"


def _caps(help_text: str, markers: str = BOTH_MARKERS) -> LauncherCapabilities:
    return LauncherCapabilities.parse(help_text + markers)


NEWEST = _caps(HELP_NO_RAY_DEFAULT)


def test_capabilities_are_read_one_by_one():
    oldest = _caps(HELP_2026_02, f"{MARKERS_SEPARATOR}\n")
    assert oldest.launch_script and oldest.solo and not oldest.daemon_exec and not oldest.requotes_exec
    assert [gap.split(" ")[0] for gap in oldest.missing(nodes=1, needs_config=False)] == ["daemon", "exec"]
    daemon_only = _caps(HELP_2026_02, f"{MARKERS_SEPARATOR}\nCommand dispatched in background\n")
    assert daemon_only.missing(nodes=1, needs_config=False)[0].startswith("exec re-quoting")
    ray_only = _caps(HELP_2026_02)
    assert ray_only.missing(nodes=2, needs_config=False) == []
    assert ray_only.backend == "ray" and ray_only.vllm_backend_args == ["--distributed-executor-backend", "ray"]
    ray_default = _caps(HELP_RAY_DEFAULT)
    assert ray_default.backend_flags == ["--no-ray"] and ray_default.vllm_backend_args == []
    assert "--config" in ray_default.missing(nodes=1, needs_config=True)[0]
    assert _caps(HELP_CONFIG).missing(nodes=2, needs_config=True) == []
    assert NEWEST.backend == "no-ray" and NEWEST.backend_flags == [] and NEWEST.vllm_backend_args == []


def test_ray_inside_no_ray_is_not_a_ray_option():
    """`--no-ray` contains `--ray`; only an option line of its own counts (the usage line lists both)."""
    assert not _caps(HELP_RAY_DEFAULT).ray_option and _caps(HELP_NO_RAY_DEFAULT).ray_option


def test_a_missing_launcher_is_told_apart(tmp_path):
    out = subprocess.run(
        ["bash", "-c", build_capabilities_command(cluster=ClusterSettings(launcher_path=str(tmp_path / "nope")))],
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == LAUNCHER_MISSING


def test_every_launcher_call_selects_its_nodes():
    cluster = ClusterSettings()
    solo = build_launch_command(entry=_entry(), cluster=cluster, nodes=_hosts()[:1], capabilities=NEWEST).command
    assert " --solo -d exec vllm serve " in solo and "--name vllm_node" in solo
    pair = build_launch_command(entry=_entry(nodes=2), cluster=cluster, nodes=_hosts(), capabilities=NEWEST).command
    assert " -n 10.0.0.1,10.0.0.2 -d exec " in pair
    assert build_stop_command(cluster=cluster, nodes=_hosts()[:1]).endswith(" --name vllm_node --solo stop")
    assert build_stop_command(cluster=cluster, nodes=_hosts()).endswith(" -n 10.0.0.1,10.0.0.2 stop")
    check = build_check_config_command(entry=_entry(nodes=2), cluster=cluster, nodes=_hosts(), capabilities=NEWEST)
    assert " -n 10.0.0.1,10.0.0.2 --check-config" in check
    local = build_launch_command(
        entry=_entry(repo="", local_path="/models/x"), cluster=cluster, nodes=_hosts()[:1], capabilities=NEWEST
    )
    assert "&& VLLM_SPARK_EXTRA_DOCKER_ARGS='-v /models/x:/models/x:ro' exec ./launch-cluster.sh " in local.command


def test_two_node_backend_follows_the_launcher():
    cluster, entry = ClusterSettings(), _entry(nodes=2)
    ray_default = build_launch_command(
        entry=entry, cluster=cluster, nodes=_hosts(), capabilities=_caps(HELP_RAY_DEFAULT)
    ).command
    assert " --no-ray -d exec " in ray_default and "distributed-executor-backend" not in ray_default
    ray_only = build_launch_command(entry=entry, cluster=cluster, nodes=_hosts(), capabilities=_caps(HELP_2026_02))
    assert ray_only.command.endswith(" --distributed-executor-backend ray") and "--no-ray" not in ray_only.command
    one_node = build_launch_command(
        entry=_entry(), cluster=cluster, nodes=_hosts()[:1], capabilities=_caps(HELP_RAY_DEFAULT)
    ).command
    assert "--no-ray" not in one_node


def test_config_only_when_the_launcher_has_it():
    cluster = ClusterSettings(launcher_config="~/spark.env")
    with_config = build_stop_command(cluster=cluster, nodes=_hosts()[:1], capabilities=NEWEST)
    assert ' --config "$HOME"/spark.env ' in with_config


def test_container_name_and_errors_from_the_launcher():
    output = "Loading configuration from .env file...\nHead Node: 10.0.0.1\nContainer Name: other_name\n"
    assert effective_container_name(output) == "other_name"
    assert effective_container_name("nothing here") is None
    assert launcher_errors("x\nError: Local IP (10.0.0.9) is not in the list of nodes (10.0.0.1).\n") == [
        "Error: Local IP (10.0.0.9) is not in the list of nodes (10.0.0.1)."
    ]


def test_secrets_are_written_from_stdin_and_read_by_each_rank(tmp_path):
    """The secrets file's text is sourced by the sh wrapper, which deletes it and execs vLLM with every argument,
    including rank flags a launcher appends after ours."""
    text = secrets_file_text({"HF_TOKEN": "hf_s3cret'$(id)", "OTHER": "a b"})
    cluster = ClusterSettings(hf_home=str(tmp_path / "hf"))
    subprocess.run(["bash", "-c", build_secrets_write_command(cluster=cluster)], input=text, text=True, check=True)
    target = tmp_path / "hf" / "spark-control" / "launch.env"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    argv = vllm_argv(entry=_entry(), cluster=cluster, with_secrets=True)
    assert "hf_s3cret" not in " ".join(argv) and argv[:2] == ["sh", "-c"]
    script = argv[2].replace(secrets_path_in_container(), str(target))
    shown = subprocess.run(
        ["sh", "-c", script, argv[3], "sh", "-c", 'printf "%s|" "$HF_TOKEN" "$OTHER" "$@"', "x", "--nnodes", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == "hf_s3cret'$(id)|a b|--nnodes|2|"
    assert not target.exists()


def test_docker_top_tells_a_live_vllm_from_the_keepalive():
    header = "UID PID PPID C STIME TTY TIME CMD\n"
    assert vllm_running(
        header + "root 1 0 0 10:00 ? 00:00:00 sleep infinity\nroot 9 0 9 10:00 ? 00:01:00 "
        "/usr/bin/python3 /usr/local/bin/vllm serve org/m\n"
    )
    assert not vllm_running(header + "root 1 0 0 10:00 ? 00:00:00 sleep infinity\n")
    assert not vllm_running("Error response from daemon: No such container: vllm_node")


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
    command = build_launch_command(entry=entry, cluster=cluster, nodes=_hosts()[:1], capabilities=NEWEST).command
    out = subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout.decode()
    assert out.split("\0")[:-1] == vllm_argv(entry=entry, cluster=cluster)
