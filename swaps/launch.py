"""Building the commands a swap runs on the Sparks. Every value from the catalog or settings goes through
`quote_arg`; nothing else in the project assembles a remote command line for the launcher.

The launcher re-quotes everything after `exec` with `printf %q` before handing it to `bash -c` inside the
container, so each vLLM argument is quoted once, for the SSH session's shell, and arrives intact.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field

from catalog.models import ModelEntry
from cluster.models import ClusterSettings, SparkHost

SECRET_ENV_NAMES = ("HF_TOKEN",)


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


def vllm_argv(*, entry: ModelEntry, cluster: ClusterSettings) -> list[str]:
    """The argv of `vllm serve` for a catalog entry (as it should arrive inside the container)."""
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
    return argv


@dataclass(frozen=True)
class LaunchCommand:
    """A remote command line plus what goes on its stdin (secrets), kept apart so argv never holds a secret."""

    command: str
    stdin: str | None = None
    secret_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shown(self) -> str:
        return self.command


def launcher_base(*, cluster: ClusterSettings) -> list[str]:
    base = [remote_path(cluster.launcher_path), "--name", quote_arg(cluster.effective_container)]
    if cluster.launcher_config:
        base += ["--config", remote_path(cluster.launcher_config)]
    return base


def build_launch_command(
    *,
    entry: ModelEntry,
    cluster: ClusterSettings,
    nodes: list[SparkHost],
    secrets: dict[str, str] | None = None,
) -> LaunchCommand:
    """The daemon-mode launch: `launch-cluster.sh --name C (--solo | -n head,worker) -d [-e SECRET] exec vllm ...`.

    Local models are bind-mounted read-only at the same path through VLLM_SPARK_EXTRA_DOCKER_ARGS. Secrets
    arrive on stdin, are exported in the remote shell and passed to docker by name only (`-e HF_TOKEN`).
    """
    secrets = {name: value for name, value in (secrets or {}).items() if value}
    parts = launcher_base(cluster=cluster)
    if len(nodes) == 1:
        parts.append("--solo")
    else:
        parts += ["-n", quote_arg(",".join(node.launcher_ip for node in nodes))]
    parts.append("-d")
    for name in secrets:
        parts += ["-e", quote_arg(name)]
    parts.append("exec")
    parts += [quote_arg(arg) for arg in vllm_argv(entry=entry, cluster=cluster)]
    prefix = ""
    if entry.is_local:
        mount = f"-v {entry.local_path}:{entry.local_path}:ro"
        prefix = f"VLLM_SPARK_EXTRA_DOCKER_ARGS={quote_arg(mount)} "
    command = prefix + "exec " + " ".join(parts)
    if not secrets:
        return LaunchCommand(command=command)
    reads = " && ".join(f"IFS= read -r {name} && export {name}" for name in secrets)
    stdin = "".join(f"{value}\n" for value in secrets.values())
    return LaunchCommand(command=f"{reads} && {command}", stdin=stdin, secret_names=tuple(secrets))


def build_stop_command(*, cluster: ClusterSettings) -> str:
    """`launch-cluster.sh --name C stop`: stops the container on every node (exit 0 even if none ran)."""
    return " ".join([*launcher_base(cluster=cluster), "stop"])


def build_help_command(*, cluster: ClusterSettings) -> str:
    path = remote_path(cluster.launcher_path)
    return f"if [ -x {path} ]; then {path} --help 2>&1; else echo __launcher_missing__; fi"


def build_container_list_command(*, cluster: ClusterSettings) -> str:
    """Names of running containers matching the vLLM container name (the caller checks for an exact match)."""
    name = quote_arg(f"name={cluster.effective_container}")
    return f"docker ps --filter {name} --format '{{{{.Names}}}}'"


def build_logs_command(*, cluster: ClusterSettings, since: str) -> str:
    return f"docker logs -f --since {quote_arg(since)} {quote_arg(cluster.effective_container)}"


def build_realpath_command(*, path: str) -> str:
    return f"realpath -e -- {quote_arg(path)} && test -d {quote_arg(path)}"


def hf_cache_dir(*, repo: str, cluster: ClusterSettings) -> str:
    """Where the HF cache keeps a repo: <HF_HOME>/hub/models--org--name."""
    home = cluster.hf_home or "~/.cache/huggingface"
    return posixpath.join(home, "hub", "models--" + repo.replace("/", "--"))


def build_hf_cache_check_command(*, repo: str, cluster: ClusterSettings) -> str:
    return f"test -d {remote_path(hf_cache_dir(repo=repo, cluster=cluster))}"


def build_hf_cache_delete_command(*, repo: str, cluster: ClusterSettings) -> str:
    return f"rm -rf -- {remote_path(hf_cache_dir(repo=repo, cluster=cluster))}"


MEMINFO_COMMAND = "grep MemAvailable /proc/meminfo"
