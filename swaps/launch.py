"""Building the commands a swap runs on the Sparks. Every value from the catalog or settings goes through
`quote_arg`; nothing else in the project assembles a remote command line for the launcher.

Three facts about the launcher (`launch-cluster.sh`) shape everything here:

- Node selection applies to EVERY action, `stop` included: without `--solo` or `-n` the launcher auto-discovers nodes
  (it needs CX7 links, and with links up it acts on every GB10 of the /24). So every call carries a selection.
- What a launcher can do depends on the version the user cloned; `LauncherCapabilities` is read from its `--help` and,
  for what the help text does not show (daemon `exec`, argument re-quoting), from the script's own text.
- The command after `exec` is re-quoted with `printf %q` before it reaches `bash -c` inside the container, so each
  vLLM argument is quoted once, for the SSH session's shell, and arrives intact.

Secrets (the Hugging Face token, a model's secret container environment) never travel on an argv: they go over SSH
stdin into a file in the node's Hugging Face cache (mounted in every container), and the vLLM command is wrapped so
each rank reads that file, deletes it and then execs vLLM.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import asdict, dataclass, field

from catalog.models import ModelEntry
from catalog.selectors import model_container_env
from cluster.models import ClusterSettings, SparkHost


class CommandBuildError(ValueError):
    """A value that cannot be passed safely (e.g. a NUL byte)."""


def quote_arg(value: object) -> str:
    """One shell word that a POSIX shell turns back into exactly `value`."""
    text = str(value)
    if "\x00" in text:
        raise CommandBuildError("an argument contains a NUL byte, which no command line can carry")
    return shlex.quote(text)


def remote_path(path: str) -> str:
    """A path for the remote shell: `~/x` keeps its home expansion, everything else is quoted."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + quote_arg(path[2:])
    return quote_arg(path)


# --- what the launcher can do ----------------------------------------------------------------------------------------

# Printed at the end of the capabilities command, then the markers found in the script's text, one per line.
MARKERS_SEPARATOR = "__spark_control_launcher_text__"
LAUNCHER_MISSING = "__launcher_missing__"
# Strings of the script's text that prove what its --help cannot: the help text is the same from 2026-02-04 to
# 2026-03-04, but daemon exec (a background `docker exec -d` and its message) came on 02-26 and `printf %q` re-quoting
# of the exec command on 03-04.
DAEMON_EXEC_MARKER = "Command dispatched in background"
REQUOTE_MARKER = "%q"


def _has_option(help_text: str, option: str) -> bool:
    """The help lists `option` as an option of its own (a line that starts with it), not inside another's text."""
    return re.search(rf"^\s*(?:-\w,\s*)?{re.escape(option)}(?:[\s,|]|$)", help_text, re.M) is not None


@dataclass(frozen=True)
class LauncherCapabilities:
    """What one installed launcher supports, each read on its own."""

    launch_script: bool = False  # --launch-script: 2026-02-04 and newer
    daemon_exec: bool = False  # `-d exec` really detaches: 2026-02-26
    requotes_exec: bool = False  # the exec command is re-quoted with printf %q: 2026-03-04
    solo: bool = False  # --solo
    no_ray: bool = False  # --no-ray (multi-node without Ray): 2026-03-13
    ray_option: bool = False  # a --ray option of its own: no-Ray became the default
    config: bool = False  # --config FILE: 2026-03-25

    @classmethod
    def parse(cls, output: str) -> LauncherCapabilities:
        """From the capabilities command's output: the help, the separator, then the markers found in the script."""
        help_text, _, markers = output.partition(MARKERS_SEPARATOR)
        found = {line.strip() for line in markers.splitlines() if line.strip()}
        return cls(
            launch_script=_has_option(help_text, "--launch-script"),
            daemon_exec=DAEMON_EXEC_MARKER in found,
            requotes_exec=REQUOTE_MARKER in found,
            solo=_has_option(help_text, "--solo"),
            no_ray=_has_option(help_text, "--no-ray"),
            ray_option=_has_option(help_text, "--ray"),
            config=_has_option(help_text, "--config"),
        )

    @property
    def backend(self) -> str:
        """How a multi-node launch runs: the launcher's own rank flags (no Ray) or a Ray cluster."""
        if self.no_ray:
            return "no-ray"
        return "ray"

    @property
    def backend_flags(self) -> list[str]:
        """Launcher flags that select the backend of a multi-node launch."""
        if self.no_ray and not self.ray_option:
            # 2026-03-13 until no-Ray became the default: Ray is the default and adds no backend flag to vLLM, so a
            # `vllm serve -tp 2` dies on "World size (2) is larger than the number of available GPUs (1)".
            return ["--no-ray"]
        return []

    @property
    def vllm_backend_args(self) -> list[str]:
        """vLLM flags a multi-node launch needs from us: only on launchers whose one multi-node mode is Ray."""
        return [] if self.no_ray else ["--distributed-executor-backend", "ray"]

    def describe_backend(self) -> str:
        if self.no_ray and self.ray_option:
            return "no Ray: the launcher's own rank flags (its default)"
        if self.no_ray:
            return "no Ray: --no-ray (this launcher defaults to Ray and would add no backend flag)"
        return "Ray: the launcher's only multi-node mode, with --distributed-executor-backend ray added"

    def missing(self, *, nodes: int, needs_config: bool) -> list[str]:
        """The capabilities a swap needs that this launcher lacks, each named with the version that brought it."""
        gaps = []
        if not self.launch_script:
            gaps.append("--launch-script (2026-02-04): this launcher predates every version Spark Control can drive")
        if not self.daemon_exec:
            gaps.append(
                "daemon exec (2026-02-26): `-d exec` runs in the foreground and the launcher stops the model when it "
                "returns"
            )
        if not self.requotes_exec:
            gaps.append("exec re-quoting with printf %q (2026-03-04): vLLM flags with spaces or JSON would be split")
        if nodes == 1 and not self.solo:
            gaps.append("--solo: a one-node launch would auto-discover nodes")
        if needs_config and not self.config:
            gaps.append("--config (2026-03-25): the cluster settings name a launcher config file")
        return gaps

    def as_dict(self) -> dict[str, bool | str]:
        return {**asdict(self), "backend": self.backend}


def build_capabilities_command(*, cluster: ClusterSettings) -> str:
    """The launcher's --help, then which of the markers its own text contains (one per line)."""
    path = remote_path(cluster.launcher_path)
    markers = " ".join(f"-e {quote_arg(marker)}" for marker in (DAEMON_EXEC_MARKER, REQUOTE_MARKER))
    return (
        f"if [ -x {path} ]; then {path} --help 2>&1; echo {MARKERS_SEPARATOR}; "
        f"grep -o -F {markers} {path} | sort -u; else echo {LAUNCHER_MISSING}; fi"
    )


# Kept for callers that only want the help text (benchmarks).
build_help_command = build_capabilities_command


# --- the vLLM command ------------------------------------------------------------------------------------------------

# Inside every container the launcher mounts the node's HF cache here (`-v $HF_HOME:/root/.cache/huggingface`).
CONTAINER_HF_HOME = "/root/.cache/huggingface"
SECRETS_DIR = "spark-control"
SECRETS_FILE = "launch.env"


def secrets_path_in_container() -> str:
    return posixpath.join(CONTAINER_HF_HOME, SECRETS_DIR, SECRETS_FILE)


def vllm_argv(
    *,
    entry: ModelEntry,
    cluster: ClusterSettings,
    capabilities: LauncherCapabilities | None = None,
    with_secrets: bool = False,
) -> list[str]:
    """The argv of `vllm serve` for a catalog entry (as it should arrive inside the container).

    With `with_secrets`, vLLM is started by a small `sh` that reads the secrets file (exported variables), deletes it
    and execs vLLM with the same arguments; the launcher still sees `vllm serve` in the command and appends its rank
    flags at the end, which reach vLLM through "$@".
    """
    argv = ["vllm", "serve", entry.source, "--served-model-name", entry.effective_served_name]
    argv += ["--host", "0.0.0.0", "--port", str(cluster.effective_vllm_port)]
    if entry.effective_tensor_parallel_size > 1:
        argv += ["-tp", str(entry.effective_tensor_parallel_size)]
    if entry.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(entry.gpu_memory_utilization)]
    if entry.max_model_len is not None:
        argv += ["--max-model-len", str(entry.max_model_len)]
    if entry.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(entry.max_num_seqs)]
    argv += [str(arg) for arg in entry.vllm_args]
    if entry.nodes > 1 and capabilities is not None:
        argv += capabilities.vllm_backend_args
    if with_secrets:
        path = secrets_path_in_container()
        script = f'. {path} && rm -f {path} && exec "$@"'
        argv = ["sh", "-c", script, "spark-control", *argv]
    return argv


# --- launcher command lines ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchCommand:
    """A remote command line plus what goes on its stdin (secrets), kept apart so argv never holds a secret."""

    command: str
    stdin: str | None = None
    secret_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shown(self) -> str:
        return self.command


def node_selection(nodes: list[SparkHost]) -> list[str]:
    """`--solo` for one node, `-n head,worker` otherwise (head first, cluster IPs as the launcher knows them)."""
    if len(nodes) == 1:
        return ["--solo"]
    return ["-n", quote_arg(",".join(node.launcher_ip for node in nodes))]


def _launcher_prefix(*, cluster: ClusterSettings) -> str:
    """Run from the launcher's own directory (recipes' mods are relative to it), `exec` so its exit is ours."""
    directory = posixpath.dirname(cluster.launcher_path) or "."
    name = posixpath.basename(cluster.launcher_path)
    return f"cd {remote_path(directory)} && exec ./{quote_arg(name)}"


def launcher_base(*, cluster: ClusterSettings, nodes: list[SparkHost], capabilities: LauncherCapabilities) -> list[str]:
    """The options every call carries: the container name, the config file, and the node selection."""
    base = ["--name", quote_arg(cluster.effective_container)]
    if cluster.launcher_config and capabilities.config:
        base += ["--config", remote_path(cluster.launcher_config)]
    base += node_selection(nodes)
    return base


def _entry_options(*, entry: ModelEntry, nodes: list[SparkHost], capabilities: LauncherCapabilities) -> list[str]:
    """What the catalog entry asks of the launcher: image, mods, container environment, extra flags, backend."""
    parts: list[str] = []
    if entry.image:
        parts += ["-t", quote_arg(entry.image)]
    for mod in entry.mods:
        parts += ["--apply-mod", quote_arg(mod)]
    for name, value in sorted(model_container_env(entry).items()):
        parts += ["-e", quote_arg(f"{name}={value}")]
    parts += [quote_arg(flag) for flag in entry.launcher_flags]
    if len(nodes) > 1:
        parts += capabilities.backend_flags
    return parts


def build_launch_command(
    *,
    entry: ModelEntry,
    cluster: ClusterSettings,
    nodes: list[SparkHost],
    capabilities: LauncherCapabilities,
    with_secrets: bool = False,
) -> LaunchCommand:
    """The daemon-mode launch: `launch-cluster.sh --name C (--solo | -n head,worker) [entry options] -d exec vllm ...`.

    Local models are bind-mounted read-only at the same path through VLLM_SPARK_EXTRA_DOCKER_ARGS. Secrets are not
    part of it: they are written to each node first (`build_secrets_write_command`).
    """
    parts = launcher_base(cluster=cluster, nodes=nodes, capabilities=capabilities)
    parts += _entry_options(entry=entry, nodes=nodes, capabilities=capabilities)
    parts.append("-d")
    parts.append("exec")
    argv = vllm_argv(entry=entry, cluster=cluster, capabilities=capabilities, with_secrets=with_secrets)
    parts += [quote_arg(arg) for arg in argv]
    prefix = ""
    if entry.is_local:
        mount = f"-v {entry.local_path}:{entry.local_path}:ro"
        prefix = f"VLLM_SPARK_EXTRA_DOCKER_ARGS={quote_arg(mount)} "
    launcher = _launcher_prefix(cluster=cluster)
    if prefix:
        launcher = launcher.replace(" && exec ", f" && {prefix}exec ", 1)
    return LaunchCommand(command=launcher + " " + " ".join(parts))


def build_check_config_command(
    *,
    entry: ModelEntry,
    cluster: ClusterSettings,
    nodes: list[SparkHost],
    capabilities: LauncherCapabilities,
) -> str:
    """The launch's own options with `--check-config`: the launcher resolves nodes, its local IP, the container name
    and SSH to the workers, prints its configuration and exits without starting anything."""
    parts = launcher_base(cluster=cluster, nodes=nodes, capabilities=capabilities)
    parts += _entry_options(entry=entry, nodes=nodes, capabilities=capabilities)
    parts.append("--check-config")
    return _launcher_prefix(cluster=cluster) + " " + " ".join(parts) + " 2>&1"


def build_stop_command(
    *, cluster: ClusterSettings, nodes: list[SparkHost], capabilities: LauncherCapabilities | None = None
) -> str:
    """`launch-cluster.sh --name C (--solo | -n ...) stop`: `docker stop` on every selected node (exit 0 even if none
    ran). The selection must name every node a container may run on."""
    parts = launcher_base(cluster=cluster, nodes=nodes, capabilities=capabilities or LauncherCapabilities(config=True))
    return _launcher_prefix(cluster=cluster) + " " + " ".join([*parts, "stop"])


CONTAINER_NAME_LINE = re.compile(r"^\s*Container Name:\s*(\S+)\s*$", re.M)


def effective_container_name(check_config_output: str) -> str | None:
    """The container name the launcher will really use (a `.env` CONTAINER_NAME overrides the default `--name`)."""
    found = CONTAINER_NAME_LINE.findall(check_config_output)
    return found[-1] if found else None


def launcher_errors(output: str) -> list[str]:
    """The launcher's own error lines (`Error: ...`), in order."""
    return [line.strip() for line in output.splitlines() if line.strip().startswith("Error")]


# --- secrets on the nodes --------------------------------------------------------------------------------------------


def hf_home(cluster: ClusterSettings) -> str:
    return cluster.hf_home or "~/.cache/huggingface"


def build_secrets_write_command(*, cluster: ClusterSettings) -> str:
    """Write stdin to the secrets file in the node's HF cache, readable by its owner only."""
    directory = posixpath.join(hf_home(cluster), SECRETS_DIR)
    target = posixpath.join(directory, SECRETS_FILE)
    return (
        f"umask 077 && mkdir -p {remote_path(directory)} && cat > {remote_path(target)}.tmp && "
        f"mv -f {remote_path(target)}.tmp {remote_path(target)}"
    )


def build_secrets_remove_command(*, cluster: ClusterSettings) -> str:
    return f"rm -f {remote_path(posixpath.join(hf_home(cluster), SECRETS_DIR, SECRETS_FILE))}"


def secrets_file_text(secrets: dict[str, str]) -> str:
    """`export NAME=value` lines, each value quoted for sh."""
    lines = []
    for name, value in secrets.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise CommandBuildError(f"{name!r} is not a valid environment variable name")
        lines.append(f"export {name}={quote_arg(value)}\n")
    return "".join(lines)


# --- the nodes -------------------------------------------------------------------------------------------------------


def build_container_list_command(*, container: str) -> str:
    """Names of running containers matching the vLLM container name (the caller checks for an exact match)."""
    name = quote_arg(f"name={container}")
    return f"docker ps --filter {name} --format '{{{{.Names}}}}'"


def build_top_command(*, container: str) -> str:
    """The processes inside the container (docker's default `top` table); fails when the container is gone."""
    return f"docker top {quote_arg(container)} 2>&1"


def vllm_running(top_output: str) -> bool:
    """Whether a `docker top` table shows a vLLM process (the keepalive `sleep infinity` alone does not count)."""
    lines = top_output.strip().splitlines()
    if not lines or not lines[0].lstrip().startswith("UID"):
        return False
    return any("vllm" in line.lower() for line in lines[1:])


def build_logs_command(*, container: str, since: str) -> str:
    return f"docker logs -f --since {quote_arg(since)} {quote_arg(container)}"


CLOCK_COMMAND = "date -u +%s"


def build_realpath_command(*, path: str) -> str:
    return f"realpath -e -- {quote_arg(path)} && test -d {quote_arg(path)}"


def hf_cache_dir(*, repo: str, cluster: ClusterSettings) -> str:
    """Where the HF cache keeps a repo: <HF_HOME>/hub/models--org--name."""
    return posixpath.join(hf_home(cluster), "hub", "models--" + repo.replace("/", "--"))


def build_hf_cache_check_command(*, repo: str, cluster: ClusterSettings) -> str:
    """Exit 0 when the repo is in the cache whole: a snapshot with its config.json, and no partial file left by a
    download that did not finish (a cancelled or failed one leaves the directory behind)."""
    directory = remote_path(hf_cache_dir(repo=repo, cluster=cluster))
    return (
        f'd={directory}; ls "$d"/snapshots/*/config.json >/dev/null 2>&1 && '
        '! ls "$d"/blobs/*.incomplete >/dev/null 2>&1'
    )


def build_hf_cache_delete_command(*, repo: str, cluster: ClusterSettings) -> str:
    return f"rm -rf -- {remote_path(hf_cache_dir(repo=repo, cluster=cluster))}"


MEMINFO_COMMAND = "grep -E '^(MemTotal|MemFree|MemAvailable|Cached):' /proc/meminfo"


@dataclass(frozen=True)
class MemInfo:
    total_kb: int
    free_kb: int
    available_kb: int
    cached_kb: int

    @classmethod
    def parse(cls, text: str) -> MemInfo | None:
        values = {key: int(value) for key, value in re.findall(r"^(\w+):\s+(\d+)", text, re.M)}
        try:
            return cls(values["MemTotal"], values["MemFree"], values["MemAvailable"], values.get("Cached", 0))
        except KeyError:
            return None


def gib(kb: int | float) -> str:
    return f"{kb / 1024 / 1024:.1f} GiB"
