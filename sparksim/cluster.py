"""Start and stop a simulated DGX Spark cluster: one real OpenSSH ``sshd`` per node on loopback.

Layout under ``root``::

    cluster.json            what :meth:`SimCluster.as_json` returns
    record.jsonl            one line per invocation of a fake program (see :mod:`sparksim.common`)
    load_seconds, fail_mode cluster-wide knobs of the current run
    ssh/                    the shared client key and a known_hosts file
    models/<name>/          local models (a directory mounted identically on every node)
    nodes/<name>/           one node: bin/, spark-vllm-docker/, .cache/huggingface/hub/, containers/,
                            meminfo, sim.env (node settings), images.json, sshd/ (config, host key, log)

``spark-vllm-docker/`` holds the fake launcher, or with ``launcher_dir`` (default: the environment
variable ``SPARKSIM_LAUNCHER_DIR``) a copy of that checkout of the real spark-vllm-docker (without
``.git``). Either way ``bin/`` holds what the real script calls on a Spark: ``docker``, ``ssh`` and ``scp``
to the other nodes by cluster IP, ``ip``, ``ibdev2netdev``, ``nc``, ``nvidia-smi`` (see
:mod:`sparksim.node_tools`); ``python3`` is the host's. ``sparksim-service`` is a fake speech, TTS, embeddings,
Qdrant or vLLM server to run as a container (:meth:`SimCluster.run_service`).

Each sshd gives sessions a node-specific environment through ``environment=`` options in its own
authorized_keys file, so ``$HOME`` is the node directory and ``PATH`` starts with the node's ``bin``.
Every process of the simulation carries ``SPARKSIM_ROOT=<root>`` in its environment; :meth:`stop`
uses that marker to leave no process behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparksim import fake_docker, meminfo
from sparksim.common import (
    DEFAULT_LOAD_SECONDS,
    FAIL_MODES,
    Node,
    atomic_write,
    package_parent,
    parse_env_file,
    read_records,
    write_env_file,
)
from sparksim.fake_vllm import ensure_repo_in_cache

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
DEFAULT_REPOS = tuple(["sim/tiny-model", "sim/big-model"] + [f"sim/{mode}" for mode in FAIL_MODES])
PID_FILE = "sparksim.pid"

# Valid Python and valid sh: `bash launch-cluster.sh ...` works as it does with the real script.
WRAPPER = """#!{python} -IS
''''exec {python_sh} -IS "$0" "$@" #'''
import time; _t0 = time.time()
import sys
sys.path.insert(0, {parent!r})
from sparksim._entry import run
sys.exit(run({prog!r}, {node_dir!r}, _t0))
"""

# What the fake launcher's own text says of the generation it imitates: a control plane reads
# capabilities from the script's text (these are the phrases the real script has from that generation).
LAUNCHER_TEXT = {
    "2026-02-26": '# exec -d: echo "Command dispatched in background (Daemon mode). Container: $CONTAINER_NAME"\n',
    "2026-03-04": '# exec: COMMAND_TO_RUN=$(printf "%q " "$@")\n',
}

RAY_SCRIPT = """#!/bin/bash
# Fake ray CLI: enough for launch-cluster.sh in Ray mode.
marker="$SPARKSIM_NODE_DIR/containers/$SPARKSIM_CONTAINER/ray-started"
case "$1" in
  start)
    [ -n "$SPARKSIM_CONTAINER" ] && touch "$marker"
    echo "Ray runtime started."
    case " $* " in *" --block "*) exec sleep infinity ;; esac ;;
  status)
    if [ -n "$SPARKSIM_CONTAINER" ] && [ -e "$marker" ]; then
      echo "======== Autoscaler status ========"; echo "Active:"; echo " 1 node_sim"; exit 0
    fi
    echo "ConnectionError: Could not find any running Ray instance." >&2; exit 1 ;;
  stop) rm -f "$marker"; echo "Stopped all Ray processes." ;;
  *) echo "Usage: ray [start|status|stop]" >&2; exit 1 ;;
esac
"""

# Text tools that read /proc/meminfo see the node's unified memory instead of this machine's.
MEMINFO_TOOL_SCRIPT = """#!/bin/bash
args=()
for a in "$@"; do
  [ "$a" = /proc/meminfo ] && a="${{SPARKSIM_MEMINFO:-/proc/meminfo}}"
  args+=("$a")
done
exec {real} "${{args[@]}}"
"""
MEMINFO_TOOLS = ("cat", "grep", "awk", "head", "tail")

EARLYOOM_SCRIPT = """#!/bin/bash
# Fake earlyoom: the keepalive of `launch-cluster.sh --earlyoom`; reports once, then waits.
echo "earlyoom 1.7"
echo "mem total: 121693 MiB, user mem total: 119500 MiB, swap total:    0 MiB"
echo "sending SIGTERM when mem avail <= 10.00% and swap free <= 100.00%,"
echo "        SIGKILL when mem avail <=  5.00% and swap free <=  50.00%"
trap 'exit 0' TERM INT
while :; do sleep 60 & wait $!; done
"""

# The real huggingface_hub CLI (`hf download`), talking to the simulated Hub through HF_ENDPOINT. The client writes a
# file in 10 MiB pieces; the simulation's files are a few MiB, so it writes every 256 KiB for progress to show.
HF_SCRIPT = """#!{python}
import sys
from huggingface_hub import constants
from huggingface_hub.cli.hf import main
constants.DOWNLOAD_CHUNK_SIZE = 256 * 1024
sys.exit(main())
"""

NODE_TOOLS = ("ssh", "scp", "ip", "ibdev2netdev", "nc")
# Created by the launcher (`mkdir -p`) on the first run of a Spark; a sim node has run it before.
LAUNCHER_CACHE_DIRS = (".cache/vllm", ".cache/flashinfer", ".triton", ".tilelang")

# `date` on the node's clock (SPARKSIM_CLOCK_OFFSET whole seconds from this machine's), as a Spark whose clock is off.
DATE_SCRIPT = """#!/bin/bash
off=$(sed -n 's/^SPARKSIM_CLOCK_OFFSET=//p' {sim_env} 2>/dev/null)
off=${{off%%.*}}
if [ -z "$off" ] || [ "$off" = 0 ]; then exec /bin/date "$@"; fi
for a in "$@"; do case "$a" in -d*|--date*|-r*|--reference*|-s*|--set*|-f*|--file*) exec /bin/date "$@";; esac; done
exec /bin/date -d "@$(( $(/bin/date +%s) + off ))" "$@"
"""

NVIDIA_SMI_SCRIPT = """#!/bin/bash
# Fake nvidia-smi of a GB10: unified memory, so memory queries answer "[N/A]" ("Not Supported" in the table).
# utilization.gpu follows the node's fake vLLM engines: each keeps gpu/<pid> holding "<running> <waiting>".
gpu_dir={gpu_dir}
utilization() {{
  local busy=0 f pid running waiting
  for f in "$gpu_dir"/*; do
    [ -f "$f" ] || continue
    pid=${{f##*/}}
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    if [ ! -d "/proc/$pid" ]; then rm -f "$f"; continue; fi
    read -r running waiting < "$f"
    busy=$((busy + ${{running:-0}}))
  done
  if [ "$busy" -gt 0 ]; then busy=$((40 + 15 * busy)); [ "$busy" -gt 100 ] && busy=100; fi
  echo "$busy"
}}
query=""; header=1; units=1
for a in "$@"; do
  case "$a" in
    --query-gpu=*) query=${{a#--query-gpu=}} ;;
    --format=*)
      case "$a" in *noheader*) header="" ;; esac
      case "$a" in *nounits*) units="" ;; esac ;;
  esac
done
if [ -n "$query" ]; then
  IFS=, read -ra fields <<< "$query"
  heads=(); values=()
  for field in "${{fields[@]}}"; do
    case "$field" in
      name|gpu_name) heads+=("name"); values+=("NVIDIA GB10") ;;
      utilization.gpu) heads+=("utilization.gpu [%]"); values+=("$(utilization)${{units:+ %}}") ;;
      memory.*) heads+=("$field [MiB]"); values+=("[N/A]") ;;
      *) echo "Field \"$field\" is not a valid field to query." >&2; exit 2 ;;
    esac
  done
  join() {{ local out="" item; for item in "$@"; do out+="${{out:+, }}$item"; done; echo "$out"; }}
  [ -n "$header" ] && join "${{heads[@]}}"
  join "${{values[@]}}"
  exit 0
fi
case " $* " in
  *"-L"*) echo "GPU 0: NVIDIA GB10 (UUID: GPU-5f1c0b7e-9a3d-4c2b-8e6f-7a1d0c9b8a7f)" ;;
  *) echo "NVIDIA-SMI 580.95.05    Driver Version: 580.95.05    CUDA Version: 13.0"
     echo "GPU 0: NVIDIA GB10    Memory-Usage: Not Supported    GPU-Util: $(utilization)%" ;;
esac
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_sim_processes(root: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """PIDs of live processes whose environment carries ``SPARKSIM_ROOT=<root>``, or whose command line names a file
    of the root's nodes: sshd rewrites its process title over its environment, so its listener is found by its
    ``-f <root>/nodes/<node>/sshd/sshd_config``."""
    marker = f"SPARKSIM_ROOT={root}".encode()
    nodes_dir = os.path.join(root, "nodes", "").encode()
    skip = {os.getpid(), *exclude}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                ours = marker in fh.read().split(b"\0")
            if not ours:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    ours = nodes_dir in fh.read()
        except OSError:
            continue
        if not ours:
            continue
        if fake_docker.pid_alive(int(entry)):
            found.append(int(entry))
    return found


def sim_sweep(root: str) -> None:
    """Stop every container of the simulation rooted at ``root``, then every process it left."""
    nodes_dir = os.path.join(root, "nodes")
    if os.path.isdir(nodes_dir):
        for name in os.listdir(nodes_dir):
            try:
                fake_docker.stop_all(Node(os.path.join(nodes_dir, name)), timeout=1.0)
            except OSError:
                pass
    kill_sim_processes(root)


def kill_sim_processes(root: str, grace: float = 2.0) -> None:
    """Terminate every process of the simulation rooted at ``root`` (SIGTERM, then SIGKILL)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        pids = find_sim_processes(root)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + wait
        while time.time() < deadline:
            if not find_sim_processes(root):
                return
            time.sleep(0.05)


class SimNode:
    """One simulated Spark: where to SSH, what it is called in the cluster, where its files are."""

    def __init__(self, cluster: SimCluster, index: int, name: str, ip: str):
        self.cluster = cluster
        self.index = index
        self.name = name
        self.role = "head" if index == 0 else "worker"
        self.host = "127.0.0.1"
        self.port = 0
        self.user = cluster.user
        self.ip = ip
        self.dir = str(Path(cluster.root, "nodes", name))
        self.host_key_line = ""
        self.process: subprocess.Popen | None = None

    @property
    def ssh_dir(self) -> str:
        return os.path.join(self.dir, "sshd")

    @property
    def hf_hub(self) -> str:
        return os.path.join(self.dir, ".cache", "huggingface", "hub")

    @property
    def launcher_path(self) -> str:
        return os.path.join(self.dir, "spark-vllm-docker", "launch-cluster.sh")

    @property
    def meminfo_path(self) -> str:
        return os.path.join(self.dir, "meminfo")

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of an SSH session on this node."""
        return {
            "PATH": f"{self.dir}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": self.dir,
            "SPARKSIM_NODE": self.name,
            "SPARKSIM_ROOT": self.cluster.root,
            "SPARKSIM_IP": self.ip,
            "SPARKSIM_MEMINFO": self.meminfo_path,
            "HF_ENDPOINT": self.cluster.hub_url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "ip": self.ip,
            "host_key_line": self.host_key_line,
            "dir": self.dir,
            "hf_hub": self.hf_hub,
            "meminfo": self.meminfo_path,
            "launcher_path": self.launcher_path,
        }

    def __repr__(self) -> str:
        return f"SimNode({self.name!r}, role={self.role!r}, port={self.port}, ip={self.ip!r})"


class SimCluster:
    """A simulated DGX Spark cluster on loopback. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        nodes: int = 2,
        load_seconds: float = DEFAULT_LOAD_SECONDS,
        user: str | None = None,
        vllm_port: int | None = None,
        ips: list[str] | None = None,
        sshd_path: str = SSHD,
        sshd_wait: float = 300.0,
        launcher_dir: str | os.PathLike | None = None,
        stop_with_owner: bool = True,
    ):
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self._own_root = root is None
        self.root = os.path.abspath(str(root)) if root is not None else tempfile.mkdtemp(prefix="sparksim-")
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.load_seconds = float(load_seconds)
        self.sshd_path = sshd_path
        self.sshd_wait = sshd_wait
        ips = ips or [f"10.0.0.{i + 1}" for i in range(nodes)]
        if len(ips) != nodes:
            raise ValueError("ips must name one address per node")
        self.nodes = [SimNode(self, i, f"spark{i + 1}", ips[i]) for i in range(nodes)]
        if launcher_dir is None:
            launcher_dir = os.environ.get("SPARKSIM_LAUNCHER_DIR") or None
        self.launcher_dir = os.path.abspath(str(launcher_dir)) if launcher_dir else None
        if self.launcher_dir and not os.path.isfile(os.path.join(self.launcher_dir, "launch-cluster.sh")):
            raise ValueError(f"{self.launcher_dir} is not a spark-vllm-docker checkout (no launch-cluster.sh)")
        self.vllm_port = vllm_port or free_port()
        self.ssh_dir = os.path.join(self.root, "ssh")
        self.client_key_path = os.path.join(self.ssh_dir, "client_ed25519")
        self.known_hosts_path = os.path.join(self.ssh_dir, "known_hosts")
        self.started = False
        # A watchdog process that stops the cluster when the process that started it ends, even by SIGKILL.
        self.stop_with_owner = stop_with_owner
        self._guard: subprocess.Popen | None = None
        self._guard_fd: int | None = None
        self.hub_port = 0
        self._hub: subprocess.Popen | None = None

    # -- convenience ---------------------------------------------------------------------------
    @property
    def head(self) -> SimNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[SimNode]:
        return self.nodes[1:]

    @property
    def launcher_path(self) -> str:
        return self.head.launcher_path

    @property
    def launcher_kind(self) -> str:
        """``"real"`` (a copy of ``launcher_dir``) or ``"fake"`` (sparksim's launcher)."""
        return "real" if self.launcher_dir else "fake"

    def node(self, name: str) -> SimNode:
        for node in self.nodes:
            if node.name == name or node.ip == name:
                return node
        raise KeyError(f"no simulated node named {name!r}")

    def __enter__(self) -> SimCluster:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()

    # -- start -----------------------------------------------------------------------------------
    def start(self) -> SimCluster:
        if self.started:
            return self
        sshd = self._wait_for_sshd()
        # Leftovers of an earlier run on the same root (a crashed test, a killed `up`) would hold ports.
        kill_sim_processes(self.root)
        if self.stop_with_owner:
            self._guard_start()
        os.makedirs(self.ssh_dir, exist_ok=True)
        os.makedirs(os.path.join(self.root, "models"), exist_ok=True)
        self._start_hub()
        if os.geteuid() == 0:
            # sshd refuses to start as root without its privilege-separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        if not os.path.exists(self.client_key_path):
            _keygen(self.client_key_path, "sparksim-client")
        client_pub = Path(self.client_key_path + ".pub").read_text().split()[:2]
        self.set_load_seconds(self.load_seconds)
        for node in self.nodes:
            self._layout(node, " ".join(client_pub))
        try:
            for node in self.nodes:
                self._start_sshd(node, sshd)
            self._write_cluster_files()
            self._verify_ssh()
        except BaseException:
            self.stop()
            raise
        self.started = True
        return self

    def _guard_start(self) -> None:
        """Start `python -m sparksim guard`: it waits for the end of a pipe only this process holds, then stops every
        process of the cluster. The kernel closes the pipe when this process dies, however it dies (SIGKILL too), so
        no sshd, container or vLLM of the simulation outlives the program that started it."""
        if self._guard is not None and self._guard.poll() is None:
            return
        read_fd, write_fd = os.pipe()  # both ends non-inheritable: no other child keeps the pipe open
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKSIM_")}
        try:
            self._guard = subprocess.Popen(
                [sys.executable, "-m", "sparksim", "guard", "--root", self.root],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=str(Path(__file__).resolve().parent.parent),
                env=env,
                start_new_session=True,  # a signal to the owner's process group must not reach the guard first
            )
        finally:
            os.close(read_fd)
        self._guard_fd = write_fd

    def _guard_stop(self) -> None:
        fd, self._guard_fd = self._guard_fd, None
        if fd is not None:
            os.close(fd)
        guard, self._guard = self._guard, None
        if guard is not None:
            try:
                guard.wait(timeout=10)
            except subprocess.TimeoutExpired:
                guard.kill()
                guard.wait()

    @property
    def hub_url(self) -> str:
        """The simulated Hugging Face Hub (``HF_ENDPOINT`` of every session on a node)."""
        return f"http://127.0.0.1:{self.hub_port}" if self.hub_port else ""

    def _start_hub(self) -> None:
        """Start the simulated Hub (:mod:`sparksim.hub`) and wait for the port it bound."""
        from sparksim import hub

        port_file = os.path.join(self.root, hub.PORT_FILE)
        try:
            os.remove(port_file)
        except FileNotFoundError:
            pass
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPARKSIM_")}, "SPARKSIM_ROOT": self.root}
        with open(os.path.join(self.root, "hub.log"), "ab") as log:
            self._hub = subprocess.Popen(
                [sys.executable, "-m", "sparksim.hub", self.root],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=package_parent(),
                env=env,
                start_new_session=True,
            )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                self.hub_port = int(Path(port_file).read_text().strip())
                return
            except (OSError, ValueError):
                if self._hub.poll() is not None:
                    break
                time.sleep(0.02)
        raise RuntimeError(f"the simulated Hub did not start; see {self.root}/hub.log")

    def set_hub(
        self,
        *,
        speed: float | None = None,
        weights_bytes: int | None = None,
        repo: str | None = None,
        config: dict | None = None,
        shards: int | list[int] | None = None,
    ) -> None:
        """Knobs of the simulated Hub: transfer ``speed`` (bytes/s, 0 = unbounded) and ``weights_bytes`` for every
        repo, or with ``repo`` that repo's ``weights_bytes``, ``shards`` (how many weight files, or their sizes) and
        ``config.json`` values."""
        from sparksim import hub

        path = os.path.join(self.root, hub.SETTINGS_FILE)
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            values = {}
        target = values.setdefault("repos", {}).setdefault(repo, {}) if repo else values
        if speed is not None:
            values["speed"] = float(speed)
        if weights_bytes is not None:
            target["weights_bytes"] = int(weights_bytes)
        if config is not None:
            target["config"] = dict(config)
        if shards is not None:
            target["shards"] = [int(size) for size in shards] if isinstance(shards, list) else int(shards)
        atomic_write(path, json.dumps(values))

    def hub_requests(self) -> list[dict]:
        """Every request the simulated Hub answered: method, path, range, status."""
        from sparksim import hub

        try:
            lines = Path(self.root, hub.LOG_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def set_downloader(self, node_name: str, present: bool) -> None:
        """Give a node the ``hf`` program (huggingface_hub's CLI, the default when it is installed) or take it away."""
        path = os.path.join(self.node(node_name).dir, "bin", "hf")
        if present:
            _write_exec(path, HF_SCRIPT.format(python=sys.executable))
        else:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

    def _wait_for_sshd(self) -> str:
        deadline = time.time() + self.sshd_wait
        while not os.path.exists(self.sshd_path):
            if time.time() > deadline:
                raise RuntimeError(f"{self.sshd_path} not found: install OpenSSH (apt-get install -y openssh-server)")
            time.sleep(1.0)
        if shutil.which(SSH_KEYGEN) is None:
            raise RuntimeError("ssh-keygen not found: install OpenSSH (apt-get install -y openssh-client)")
        return self.sshd_path

    def _install_launcher(self, node: SimNode) -> list[tuple[str, str]]:
        """Put the real checkout or the fake launcher in ``~/spark-vllm-docker``; returns wrappers to write."""
        dest = os.path.join(node.dir, "spark-vllm-docker")
        script = os.path.join(dest, "launch-cluster.sh")
        try:
            installed_fake = "sparksim._entry" in Path(script).read_text(errors="replace")
        except OSError:
            installed_fake = None
        if self.launcher_dir:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(self.launcher_dir, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            return []
        if installed_fake is False:
            shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(os.path.join(dest, "examples"), exist_ok=True)
        return [("launch-cluster.sh", "spark-vllm-docker/launch-cluster.sh")]

    def _fake_launcher_text(self, node: SimNode) -> str:
        from sparksim.fake_launcher import ALIASES, GENERATIONS, NEWEST

        value = parse_env_file(os.path.join(node.dir, "sim.env")).get("SPARKSIM_LAUNCHER_VERSION", "").strip().lower()
        generation = ALIASES.get(value, value)
        if generation not in GENERATIONS:
            generation = NEWEST
        lines = f"# sparksim stand-in for launch-cluster.sh, generation {generation}\n"
        return lines + "".join(text for since, text in LAUNCHER_TEXT.items() if generation >= since)

    def _rewrite_fake_launcher(self, node: SimNode) -> None:
        path = node.launcher_path
        try:
            text = Path(path).read_text()
        except OSError:
            return
        if self.launcher_dir or "sparksim._entry" not in text:
            return
        head = text.split("# sparksim stand-in", 1)[0]
        _write_exec(path, head + self._fake_launcher_text(node))

    def _layout(self, node: SimNode, client_pub: str) -> None:
        for sub in ("bin", "containers", ".cache/huggingface/hub", "sshd", *LAUNCHER_CACHE_DIRS):
            os.makedirs(os.path.join(node.dir, sub), exist_ok=True)
        parent = package_parent()
        programs = [("docker", "bin/docker"), ("vllm", "bin/vllm"), ("sparksim-service", "bin/sparksim-service")]
        programs += self._install_launcher(node)
        programs += [(tool, f"bin/{tool}") for tool in NODE_TOOLS]
        for prog, path in programs:
            text = WRAPPER.format(
                python=sys.executable,
                python_sh=shlex.quote(sys.executable),
                parent=parent,
                prog=prog,
                node_dir=node.dir,
            )
            if prog == "launch-cluster.sh":
                text += self._fake_launcher_text(node)
            _write_exec(os.path.join(node.dir, path), text)
        _write_exec(os.path.join(node.dir, "bin", "ray"), RAY_SCRIPT)
        gpu_dir = shlex.quote(os.path.join(node.dir, "gpu"))
        _write_exec(os.path.join(node.dir, "bin", "nvidia-smi"), NVIDIA_SMI_SCRIPT.format(gpu_dir=gpu_dir))
        sim_env_path = shlex.quote(os.path.join(node.dir, "sim.env"))
        _write_exec(os.path.join(node.dir, "bin", "date"), DATE_SCRIPT.format(sim_env=sim_env_path))
        _write_exec(os.path.join(node.dir, "bin", "earlyoom"), EARLYOOM_SCRIPT)
        if importlib.util.find_spec("huggingface_hub") is not None:
            _write_exec(os.path.join(node.dir, "bin", "hf"), HF_SCRIPT.format(python=sys.executable))
        for tool in MEMINFO_TOOLS:
            real = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin")
            if real:
                _write_exec(os.path.join(node.dir, "bin", tool), MEMINFO_TOOL_SCRIPT.format(real=shlex.quote(real)))
        images = os.path.join(node.dir, "images.json")
        if not os.path.exists(images):
            atomic_write(images, json.dumps({"vllm-node": fake_docker.DEFAULT_IMAGE_ID}))
        sim_env = os.path.join(node.dir, "sim.env")
        if not os.path.exists(sim_env):
            write_env_file(sim_env, {})
        for repo in DEFAULT_REPOS:
            ensure_repo_in_cache(node.hf_hub, repo)
        meminfo.init(Node(node.dir))

        host_key = os.path.join(node.ssh_dir, "host_ed25519")
        if not os.path.exists(host_key):
            _keygen(host_key, f"sparksim-host-{node.name}")
        node.host_key_line = " ".join(Path(host_key + ".pub").read_text().split()[:2])
        options = ",".join(f'environment="{k}={_quote_option(v)}"' for k, v in node.env.items())
        atomic_write(os.path.join(node.ssh_dir, "authorized_keys"), f"{options} {client_pub} sparksim-client\n")

    def _sshd_config(self, node: SimNode) -> str:
        return "\n".join(
            [
                f"Port {node.port}",
                "ListenAddress 127.0.0.1",
                "AddressFamily inet",
                f"HostKey {node.ssh_dir}/host_ed25519",
                "PidFile none",
                f"AuthorizedKeysFile {node.ssh_dir}/authorized_keys",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "PermitUserEnvironment yes",
                "PermitUserRC no",
                f"AllowUsers {self.user}",
                "AcceptEnv LANG LC_*",
                "PrintMotd no",
                "PrintLastLog no",
                "X11Forwarding no",
                "UseDNS no",
                "MaxStartups 200:30:400",
                "MaxSessions 200",
                "LoginGraceTime 30",
                "LogLevel ERROR",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )

    def _start_sshd(self, node: SimNode, sshd: str) -> None:
        config = os.path.join(node.ssh_dir, "sshd_config")
        log_path = os.path.join(node.ssh_dir, "sshd.log")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SPARKSIM_ROOT": self.root, "SPARKSIM_NODE": node.name}
        last_error = ""
        for _attempt in range(5):
            node.port = free_port()
            atomic_write(config, self._sshd_config(node))
            with open(log_path, "ab") as log:
                node.process = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", config],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    start_new_session=True,
                )
            if _wait_banner(node.port, node.process, timeout=10.0):
                return
            if node.process.poll() is None:
                node.process.kill()
            node.process.wait()
            last_error = Path(log_path).read_text(errors="replace")[-2000:]
            if "Address already in use" not in last_error and "Cannot bind" not in last_error:
                break
        raise RuntimeError(f"sshd for {node.name} did not start:\n{last_error}")

    def _write_cluster_files(self) -> None:
        atomic_write(self.known_hosts_path, "".join(n.known_hosts_line + "\n" for n in self.nodes))
        atomic_write(os.path.join(self.root, "cluster.json"), json.dumps(self.as_json(), indent=2))

    def _verify_ssh(self) -> None:
        if shutil.which("ssh") is None:
            return
        procs = [
            (
                node,
                subprocess.Popen(
                    self.ssh_argv(node, "echo $HOME"),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for node in self.nodes
        ]
        for node, proc in procs:
            out, err = proc.communicate(timeout=30)
            if proc.returncode != 0 or out.strip() != node.dir:
                log = Path(node.ssh_dir, "sshd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"SSH to simulated node {node.name} failed (rc={proc.returncode}): "
                    f"{out.strip()} {err.strip()}\nsshd log:\n{log}"
                )

    # -- stop --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every container process and every sshd; leaves no process of this cluster behind."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                try:
                    os.killpg(node.process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        for node in self.nodes:
            if os.path.isdir(os.path.join(node.dir, "containers")):
                try:
                    fake_docker.stop_all(Node(node.dir), timeout=1.0)
                except OSError:
                    pass
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
        kill_sim_processes(self.root)
        if self._hub is not None:
            self._hub.wait()
            self._hub = None
        self._guard_stop()
        self.started = False

    # -- knobs -------------------------------------------------------------------------------------
    def set_load_seconds(self, seconds: float) -> None:
        """Load time of ``vllm serve`` for the next runs (a container's SPARKSIM_LOAD_SECONDS wins)."""
        self.load_seconds = float(seconds)
        os.makedirs(self.root, exist_ok=True)
        atomic_write(os.path.join(self.root, "load_seconds"), f"{self.load_seconds}\n")

    def set_silent_seconds(self, seconds: float) -> None:
        atomic_write(os.path.join(self.root, "silent_seconds"), f"{float(seconds)}\n")

    def set_fail_mode(self, mode: str | None) -> None:
        """Force a failure mode for every launch (``None`` restores normal behaviour)."""
        path = os.path.join(self.root, "fail_mode")
        if mode is None:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            return
        mode = mode.removeprefix("sim/")
        if mode not in FAIL_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; known: {', '.join(FAIL_MODES)}")
        atomic_write(path, mode + "\n")

    def set_node_env(self, node_name: str, key: str, value: str | None) -> None:
        """Set (or with ``None`` remove) a node setting, e.g. SPARKSIM_FAIL or SPARKSIM_LAUNCHER_VERSION."""
        path = os.path.join(self.node(node_name).dir, "sim.env")
        values = parse_env_file(path)
        if value is None:
            values.pop(key, None)
        else:
            values[key] = str(value)
        write_env_file(path, values)
        if key == "SPARKSIM_LAUNCHER_VERSION":
            self._rewrite_fake_launcher(self.node(node_name))

    def set_launcher_version(self, version: str | None, node_name: str | None = None) -> None:
        """``"old"`` makes the launcher a pre-2026 one (no --launch-script, no --ray, no daemon exec)."""
        for node in [self.node(node_name)] if node_name else self.nodes:
            self.set_node_env(node.name, "SPARKSIM_LAUNCHER_VERSION", version)

    def set_cx7_links(self, links: int | None, node_name: str | None = None) -> None:
        """How many ConnectX-7 links are up (0, 2 or 4; ``None`` restores the default: 2 on a multi-node
        cluster, 0 on one node) on one node or all. 0 is a single Spark without a cable."""
        if links is not None and not 0 <= int(links) <= 4:
            raise ValueError("a Spark has 4 CX7 links at most")
        for node in [self.node(node_name)] if node_name else self.nodes:
            self.set_node_env(node.name, "SPARKSIM_CX7_LINKS", None if links is None else str(int(links)))

    def set_image(self, node_name: str, image: str, image_id: str | None) -> None:
        """Add, change (or with ``None`` remove) a docker image of one node."""
        path = os.path.join(self.node(node_name).dir, "images.json")
        try:
            images = json.loads(Path(path).read_text())
        except (FileNotFoundError, ValueError):
            images = {}
        if image_id is None:
            images.pop(image, None)
        else:
            images[image] = image_id
        atomic_write(path, json.dumps(images))

    # -- files -------------------------------------------------------------------------------------
    def make_local_model(self, name: str, config: dict | None = None) -> str:
        """Create ``<root>/models/<name>`` (visible at the same path on every node); returns its path."""
        path = os.path.join(self.root, "models", name)
        os.makedirs(path, exist_ok=True)
        cfg = config or {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "max_position_embeddings": 32768,
            "_name_or_path": name,
        }
        atomic_write(os.path.join(path, "config.json"), json.dumps(cfg, indent=2))
        atomic_write(os.path.join(path, "tokenizer_config.json"), json.dumps({"model_max_length": 32768}))
        Path(path, "model.safetensors").touch()
        return path

    def ensure_hf_repo(self, repo: str, nodes: list[str] | None = None) -> None:
        """Put ``repo`` in the HF cache of the given nodes (default: all)."""
        for node in self.nodes:
            if nodes is None or node.name in nodes:
                ensure_repo_in_cache(node.hf_hub, repo)

    def remove_hf_repo(self, repo: str, nodes: list[str] | None = None) -> None:
        for node in self.nodes:
            if nodes is None or node.name in nodes:
                shutil.rmtree(os.path.join(node.hf_hub, "models--" + repo.replace("/", "--")), ignore_errors=True)

    # -- observation -------------------------------------------------------------------------------
    def records(self, prog: str | None = None, event: str | None = None, since: float | None = None) -> list[dict]:
        """Parsed records, optionally only one program, one event, or those at or after ``since``."""
        found = read_records(self.root, prog=prog, event=event)
        return found if since is None else [r for r in found if r.get("t", 0) >= since]

    def containers(self, node_name: str) -> list[str]:
        """Names of the running containers of a node."""
        return fake_docker.running_names(Node(self.node(node_name).dir))

    def container_log(self, node_name: str, container: str) -> str:
        path = os.path.join(self.node(node_name).dir, "containers", container, "log")
        try:
            raw = Path(path).read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""
        # Lines end at newlines only, as in docker's log: a tqdm bar's carriage returns stay inside its line.
        return "".join(line.partition(" ")[2] + "\n" for line in raw.split("\n") if line)

    def run_service(
        self,
        node_name: str,
        container: str,
        kind: str,
        *,
        port: int | None = None,
        mode: str = "ok",
        start_seconds: float | None = None,
        model: str | None = None,
        image: str = "sim/service",
        wait: bool = False,
    ) -> int:
        """Run a fake service (see :func:`sparksim.fake_services.container_main`) as a container on a node, the way
        speech, TTS, embeddings or Qdrant run on a Spark; ``docker stop|start|restart`` act on it. Returns its port
        (it listens once its start-up delay has passed; with ``wait`` this returns only then). A container of that
        name left by an earlier run is removed."""
        node = self.node(node_name)
        port = port or free_port()
        docker = os.path.join(node.dir, "bin", "docker")
        subprocess.run([docker, "rm", "-f", container], env=node.env, capture_output=True, timeout=60, check=False)
        self.set_image(node.name, image, "sha256:" + hashlib.sha256(image.encode()).hexdigest())
        argv = [
            os.path.join(node.dir, "bin", "docker"),
            "run",
            "-d",
            "--name",
            container,
            "--restart",
            "unless-stopped",
        ]
        argv += [image, "sparksim-service", kind, "--port", str(port), "--mode", mode]
        if start_seconds is not None:
            argv += ["--start-seconds", str(start_seconds)]
        done = subprocess.run(argv, env=node.env, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"docker run {container} failed ({done.returncode}): {done.stderr.strip()}")
        if wait:
            self.wait_listening(port, name=container)
        return port

    def wait_listening(self, port: int, *, name: str = "the service", timeout: float = 60.0) -> None:
        """Return once 127.0.0.1:port accepts connections (a fake service finished loading)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:g} s") from None
                time.sleep(0.05)

    def mem_available_kb(self, node_name: str) -> int | None:
        return meminfo.read_available_kb(self.node(node_name).meminfo_path)

    def stop_containers(self) -> None:
        """Stop every container on every node (a clean slate between tests)."""
        for node in self.nodes:
            fake_docker.stop_all(Node(node.dir), timeout=1.0)

    def processes(self) -> list[int]:
        """PIDs of every live process of this cluster (sshd, sessions, containers)."""
        return find_sim_processes(self.root)

    def ssh_argv(self, node: SimNode | str, command: str) -> list[str]:
        """An OpenSSH command line that runs ``command`` on a node."""
        node = self.node(node) if isinstance(node, str) else node
        return [
            "ssh",
            "-i",
            self.client_key_path,
            "-p",
            str(node.port),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
            f"{node.user}@{node.host}",
            command,
        ]

    def as_json(self) -> dict:
        return {
            "root": self.root,
            "nodes": [node.to_json() for node in self.nodes],
            "client_key_path": self.client_key_path,
            "known_hosts_path": self.known_hosts_path,
            "launcher_path": self.launcher_path,
            "launcher": self.launcher_kind,
            "launcher_dir": self.launcher_dir,
            "vllm_port": self.vllm_port,
            "load_seconds": self.load_seconds,
            "user": self.user,
            "hub_url": self.hub_url,
        }


def _keygen(path: str, comment: str) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    os.chmod(path, 0o600)


def _write_exec(path: str, text: str) -> None:
    atomic_write(path, text)
    os.chmod(path, 0o755)


def _quote_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _wait_banner(port: int, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                if sock.recv(64).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False
