"""A fake ``launch-cluster.sh`` (eugr/spark-vllm-docker) that imitates one generation of the real script.

The node setting ``SPARKSIM_LAUNCHER_VERSION`` picks the generation (see :data:`GENERATIONS`; default the
newest; ``old`` is the oldest). What changes between generations, as far as a swap can tell:

``2026-02-04``  unknown words start an ``exec`` command; ``exec -d`` still runs in the FOREGROUND and the
                script's exit handler stops the cluster when it returns; the exec command is joined with
                spaces (JSON values are word-split inside the container); multi-node = Ray, no backend flag.
``2026-02-26``  ``exec -d`` detaches (``docker exec -d``, "Command dispatched ...", exit 0 even if that
                failed); unknown arguments are refused; cache dirs mounted.
``2026-03-04``  the exec command is re-quoted like ``printf %q``.
``2026-03-13``  containers run ``sleep infinity``; ``--no-ray`` (Ray stays the default and adds no backend
                flag; ``--no-ray`` appends the launcher's rank flags).
``2026-03-25``  ``--config``/``.env`` (``CLUSTER_NODES``, ``LOCAL_IP``, ``CONTAINER_NAME``, ``CONTAINER_*`` ...),
                ``--master-port``.
``2026-08-10``  no-Ray is the default, ``--ray`` adds ``--distributed-executor-backend ray``; ``--ray``/
                ``--no-ray`` with one node are errors; ``-v``; ``-tp/-pp/-dp`` need that many nodes; head and
                worker images must match; an action is mandatory.

Every generation selects nodes for every action (``stop`` included): ``--solo``, ``-n``, ``.env`` or
auto-discovery, which needs CX7 links up. The links come from the node's own ``bin/ibdev2netdev`` when it
has one, else from the node setting ``SPARKSIM_CX7_LINKS`` (0, 2 or 4; default 2 on a multi-node sim and 0
on a one-node sim). Interface addresses come from the node's ``bin/ip`` when it has one, else: the
coordination interface (``enp1s0f1np1`` with 2 links, ``enP7s7`` with 4) carries the node's sim IP/24.
Discovery finds every sim node in the head's /24.

Like the real script, the command after ``exec`` is text: the parallelism check, the ``vllm serve`` test
and the rank flags (appended at the END) work on the text, and each command reaches the container
through the same shell layers (``bash -c`` in the container, the worker's login shell for what the real
script sends over ``ssh``), so quoting behaves as it does for real. Where the real script SSHes to a worker,
this one runs ``bash -c`` with the worker's login environment (so a variable of the launcher's own
environment is not set there); sim IPs map to nodes through ``<root>/cluster.json``.

Sim stand-ins: before 2026-03-13 a multi-node container runs the image's ``run-cluster-node.sh`` (a Ray
node); the sim image has no such file, so the container runs the equivalent ``ray start --block`` instead.
``SPARKSIM_LAUNCHER_SETTLE_SECONDS`` replaces the real script's 2 s / 5 s pauses (default 0.2).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from sparksim.common import SIM_KNOBS, Node, fail_mode_for_text, parse_env_file

GENERATIONS = ("2026-02-04", "2026-02-26", "2026-03-04", "2026-03-13", "2026-03-25", "2026-08-10")
NEWEST = GENERATIONS[-1]
ALIASES = {"old": GENERATIONS[0], "oldest": GENERATIONS[0], "newest": NEWEST, "latest": NEWEST}
DEFAULT_IMAGE = "vllm-node"
DEFAULT_CONTAINER = "vllm_node"
DEFAULT_MASTER_PORT = "29501"
CONTAINER_EXEC_SCRIPT = "/workspace/exec-script.sh"
VALUE_OPTS_NEEDING_PRIVILEGE = ("--mem-limit-gb", "--mem-swap-limit-gb", "--pids-limit", "--shm-size-gb")


def generation_of(node: Node) -> str:
    """The generation the node's launcher imitates (``SPARKSIM_LAUNCHER_VERSION``)."""
    value = (node.setting("SPARKSIM_LAUNCHER_VERSION") or "").strip().lower()
    if not value:
        return NEWEST
    value = ALIASES.get(value, value)
    if value not in GENERATIONS:
        return NEWEST
    return value


def write_launcher_env(node_dir: str, values: dict[str, str] | None) -> str:
    """Write (or with ``None`` remove) ``~/spark-vllm-docker/.env`` of a node; returns its path.

    E.g. ``{"CONTAINER_NAME": "other"}`` makes the launcher (2026-03-25 and newer) rename the container.
    """
    path = os.path.join(node_dir, "spark-vllm-docker", ".env")
    if values is None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


class Exit(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def say(*parts: str) -> None:
    print(*parts, flush=True)


def printf_q(args: list[str]) -> str:
    """``$(printf "%q " "$@")`` of bash: each word escaped, each followed by a space, trailing space dropped."""
    if not args:
        return ""
    out = subprocess.run(
        ["bash", "-c", 'printf "%q " "$@"', "printf", *args], capture_output=True, text=True, check=False
    ).stdout
    return out.rstrip("\n")


# -- the sim's network picture -----------------------------------------------------------------------------------
def cx7_links(node: Node) -> int:
    value = node.setting("SPARKSIM_CX7_LINKS")
    if value is None:
        return 2 if len(node.cluster.get("nodes", [])) > 1 else 0
    try:
        return int(value)
    except ValueError:
        return 0


def ibdev2netdev_text(node: Node) -> str | None:
    """What ``ibdev2netdev`` prints on the node (None: the program is missing)."""
    program = os.path.join(node.bin, "ibdev2netdev")
    if os.access(program, os.X_OK):
        proc = subprocess.run([program], capture_output=True, text=True, env=dict(os.environ), check=False)
        return proc.stdout
    links = cx7_links(node)
    ports = [
        ("rocep1s0f0", "enp1s0f0np0", links >= 4),
        ("rocep1s0f1", "enp1s0f1np1", links >= 2),
        ("roceP2p1s0f0", "enP2p1s0f0np0", links >= 4),
        ("roceP2p1s0f1", "enP2p1s0f1np1", links >= 2),
    ]
    return "".join(f"{ib} port 1 ==> {net} ({'Up' if up else 'Down'})\n" for ib, net, up in ports)


def iface_cidr(node: Node, dev: str) -> str:
    """``ip -o -f inet addr show DEV | awk '{print $4}' | head -n1`` on the node ('' when none)."""
    program = os.path.join(node.bin, "ip")
    if os.access(program, os.X_OK):
        proc = subprocess.run(
            [program, "-o", "-f", "inet", "addr", "show", dev],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            check=False,
        )
        for line in proc.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                return fields[3]
        return ""
    links = cx7_links(node)
    index = _node_index(node)
    if links == 4:
        table = {
            "enP7s7": f"{node.ip}/24",
            "enp1s0f0np0": f"192.168.100.{index}/24",
            "enp1s0f1np1": f"192.168.101.{index}/24",
        }
    elif links >= 1:
        table = {"enp1s0f1np1": f"{node.ip}/24"}
    else:
        table = {"enP7s7": f"{node.ip}/24"}
    return table.get(dev, "")


def _node_index(node: Node) -> int:
    for i, entry in enumerate(node.cluster.get("nodes", [])):
        if entry.get("name") == node.name:
            return i + 1
    return 1


class Launcher:
    def __init__(self, node: Node, argv: list[str]):
        self.node = node
        self.argv = argv
        self.gen = generation_of(node)
        g = GENERATIONS.index(self.gen)
        self.g = g
        self.script = f"./{os.path.basename(sys.argv[0]) or 'launch-cluster.sh'}"
        self.home = os.environ.get("HOME") or node.dir
        hf_cache = os.path.join(self.home, ".cache", "huggingface")
        if g >= 1:
            hf_cache = os.environ.get("HF_HOME") or hf_cache
        self.docker_args = "-e NCCL_IGNORE_CPU_AFFINITY=1"
        if g >= 5:
            self.docker_args += " -e PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
        self.docker_args += f" -v {hf_cache}:/root/.cache/huggingface"
        extra = os.environ.get("VLLM_SPARK_EXTRA_DOCKER_ARGS")
        if extra:
            self.docker_args += f" {extra}"
        self.image = DEFAULT_IMAGE
        self.container = DEFAULT_CONTAINER
        self.nodes_arg = ""
        self.eth_if = ""
        self.ib_if = ""
        self.nccl_debug = ""
        self.master_port = DEFAULT_MASTER_PORT
        self.daemon = False
        self.check_config = False
        self.action = "" if g >= 5 else "start"
        self.command = ""
        self.mods: list[str] = []
        self.launch_script = ""
        self.launch_script_mode = False
        self.solo = False
        self.no_ray = g >= 5
        self.no_ray_explicit = False
        self.ray_explicit = False
        self.mount_cache_dirs = True
        self.build_jobs = ""
        self.non_privileged = False
        self.limits = {
            "--mem-limit-gb": "110",
            "--mem-swap-limit-gb": "",
            "--pids-limit": "4096",
            "--shm-size-gb": "64",
        }
        self.config_file = ""
        self.config_set = False
        self.volumes: list[str] = []
        self.ports: list[str] = []
        self.earlyoom = False
        self.keep_entrypoint = False
        self.local_ip = os.environ.get("LOCAL_IP", "")
        self.cidr = ""
        self.peers: list[str] = []
        self.dotenv: dict[str, str] = {}
        self.cache_dirs: list[str] = []
        self.cluster_was_running = False
        self.cleanup_armed = False
        self.cleaned = False

    # -- usage ---------------------------------------------------------------------------------------------------
    def usage(self) -> None:
        g = self.g
        synopsis = (
            f"Usage: {self.script} [-n <node_ips>] [-t <image_name>] [--name <container_name>] [--eth-if <if_name>] "
            "[--ib-if <if_name>] [--nccl-debug <level>] [--check-config] [--solo] "
        )
        if g >= 5:
            synopsis += "[--ray|--no-ray] [-p <host:container>] [-v <local:container>] "
        synopsis += "[-d] [action] [command]"
        rows: list[tuple[str, str, int, int]] = [
            ("-n, --nodes", "Node IPs separated by commas, head first (found automatically when left out)", 0, 9),
            ("-t", f"Image to run (default: {DEFAULT_IMAGE})", 0, 9),
            ("--name", f"Name of the container on every node (default: {DEFAULT_CONTAINER})", 0, 9),
            ("--eth-if", "Ethernet interface for cluster traffic (found automatically)", 0, 9),
            ("--ib-if", "RoCE/InfiniBand devices for NCCL (found automatically)", 0, 9),
            ("-e, --env", "Set a variable in the containers, VAR=value or VAR to copy it from here", 0, 9),
            ("-j", "Parallel build jobs exported to the containers (optional)", 1, 9),
            ("--nccl-debug", "NCCL_DEBUG level: VERSION, WARN, INFO or TRACE (INFO when no level follows)", 0, 9),
            ("--apply-mod", "A directory or zip with a run.sh applied to every container first (repeatable)", 0, 9),
            ("--launch-script", "A bash script (examples/ name or path) run inside the container; no action", 0, 9),
            ("--check-config", "Show the detected configuration and exit without launching", 0, 9),
            ("--solo", "One node: no discovery, only this machine, no Ray cluster", 0, 9),
            ("--master-port", f"Ray head port or torch.distributed master port (default: {DEFAULT_MASTER_PORT})", 4, 9),
            ("-p, --publish", "Publish a container port (host:container); only with --solo; repeatable", 5, 9),
            ("-v, --volume", "Bind-mount host:container[:opts] in every container; repeatable", 5, 9),
            ("--ray", "Run multi-node vLLM on Ray; adds --distributed-executor-backend ray when missing", 5, 9),
        ]
        if g >= 5:
            rows.append(("--no-ray", "Multi-node vLLM without Ray, the default (accepted for compatibility)", 5, 9))
        else:
            rows.append(("--no-ray", "Multi-node vLLM without Ray: torch.distributed with per-node rank flags", 3, 4))
        rows += [
            ("--no-cache-dirs", "Leave out the default cache mounts (vLLM, FlashInfer, Triton caches)", 1, 9),
            ("--keep-entrypoint", "Keep the image's entrypoint (cleared by default)", 5, 9),
            ("--earlyoom", "Keep the container alive with earlyoom instead of sleep infinity", 5, 9),
            ("--earlyoom-args", "Options for earlyoom", 5, 9),
            ("-d", "Daemon mode (only for 'start' action)", 0, 9),
            ("--non-privileged", "Drop --privileged and --ipc=host, use explicit limits instead", 1, 9),
            ("--mem-limit-gb", "Memory limit in GB (only with --non-privileged)", 1, 9),
            ("--mem-swap-limit-gb", "Memory plus swap limit in GB (only with --non-privileged)", 1, 9),
            ("--pids-limit", "Process limit (only with --non-privileged)", 1, 9),
            ("--shm-size-gb", "Shared memory in GB (only with --non-privileged)", 1, 9),
            ("--config", "A .env file with cluster settings (default: .env next to this script)", 4, 9),
            ("--setup/--discover", "Run discovery and save the result even when a .env exists", 5, 9),
            ("action", "start | stop | status | exec (Default: start). Not with --launch-script.", 0, 9),
            ("command", "What 'exec' runs in the head container. Not with --launch-script.", 0, 9),
        ]
        lines = [synopsis]
        for name, text, lo, hi in rows:
            if lo <= g <= hi:
                lines.append(f"  {name:<15} {text}")
        lines.append("")
        if g >= 4:
            lines += [
                "Keys read from .env:",
                "  CLUSTER_NODES       node IPs, head first",
                "  ETH_IF              Ethernet interface",
                "  IB_IF               RoCE/InfiniBand devices",
                f"  MASTER_PORT         coordination port (default: {DEFAULT_MASTER_PORT})",
                f"  CONTAINER_NAME      container name (default: {DEFAULT_CONTAINER})",
                "  LOCAL_IP            this machine's IP (solo mode, or instead of detection)",
                "  CONTAINER_*         any other CONTAINER_X=v becomes -e X=v",
                "",
            ]
        if g >= 5:
            lines += [
                "Multi-node vllm serve:",
                "  The launcher adds the backend and the per-node rank flags itself; do not pass",
                "  --distributed-executor-backend, --nnodes, --node-rank, --master-addr, --master-port or --headless.",
                "",
            ]
        else:
            lines += [
                "Launch scripts:",
                f"  {self.script} --launch-script examples/my-script.sh",
                f"  {self.script} --launch-script /path/to/script.sh",
            ]
        say("\n".join(lines))
        raise Exit(1)

    # -- argument parsing ------------------------------------------------------------------------------------------
    def parse(self) -> None:
        g = self.g
        args = list(self.argv)
        i = 0

        def value() -> str:
            return args[i + 1] if i + 1 < len(args) else ""

        takes_value = {"-n", "--nodes", "-t", "--name", "--eth-if", "--ib-if", "-e", "--env", "--apply-mod"}
        takes_value.add("--launch-script")
        if g >= 1:
            takes_value |= {"-j", *VALUE_OPTS_NEEDING_PRIVILEGE}
        if g >= 4:
            takes_value |= {"--master-port", "--head-port", "--config"}
        if g >= 5:
            takes_value |= {"-p", "--publish", "-v", "--volume", "--earlyoom-args"}
        flags = {"--check-config", "--solo", "-d"}
        if g >= 1:
            flags |= {"--no-cache-dirs", "--non-privileged"}
        if g >= 3:
            flags.add("--no-ray")
        if g >= 5:
            flags |= {"--ray", "--keep-entrypoint", "--earlyoom", "--setup", "--discover"}

        while i < len(args):
            arg = args[i]
            step = 2 if arg in takes_value else 1
            if arg in ("-n", "--nodes"):
                self.nodes_arg = value()
            elif arg == "-t":
                self.image = value()
            elif arg == "--name":
                self.container = value()
            elif arg == "--eth-if":
                self.eth_if = value()
            elif arg == "--ib-if":
                self.ib_if = value()
            elif arg in ("-e", "--env"):
                self.docker_args += f" -e {value()}"
            elif arg == "-j" and g >= 1:
                self.build_jobs = value()
            elif arg == "--apply-mod":
                self.mods.append(value())
            elif arg == "--launch-script":
                self.launch_script = value()
            elif arg == "--nccl-debug":
                if re.fullmatch(r"VERSION|WARN|INFO|TRACE", value()):
                    self.nccl_debug, step = value(), 2
                else:
                    self.nccl_debug = "INFO"
            elif arg in VALUE_OPTS_NEEDING_PRIVILEGE and g >= 1:
                self.limits[arg] = value()
            elif arg in ("--master-port", "--head-port") and g >= 4:
                self.master_port = value()
            elif arg in ("-p", "--publish") and g >= 5:
                self.ports.append(value())
            elif arg.startswith(("-p=", "--publish=")) and g >= 5:
                self.ports.append(arg.split("=", 1)[1])
            elif arg in ("-v", "--volume") and g >= 5:
                self.volumes.append(value())
            elif arg.startswith(("-v=", "--volume=")) and g >= 5:
                self.volumes.append(arg.split("=", 1)[1])
            elif arg == "--check-config":
                self.check_config = True
            elif arg == "--solo":
                self.solo = True
            elif arg == "--ray" and g >= 5:
                if self.no_ray_explicit:
                    say("Error: --ray and --no-ray are mutually exclusive.")
                    raise Exit(1)
                self.no_ray, self.ray_explicit = False, True
            elif arg == "--no-ray" and g >= 3:
                if self.ray_explicit:
                    say("Error: --ray and --no-ray are mutually exclusive.")
                    raise Exit(1)
                self.no_ray, self.no_ray_explicit = True, True
            elif arg == "--no-cache-dirs" and g >= 1:
                self.mount_cache_dirs = False
            elif arg == "--non-privileged" and g >= 1:
                self.non_privileged = True
            elif arg in ("--keep-entrypoint", "--setup", "--discover") and g >= 5:
                self.keep_entrypoint = self.keep_entrypoint or arg == "--keep-entrypoint"
            elif arg in ("--earlyoom", "--earlyoom-args") and g >= 5:
                self.earlyoom = True
            elif arg.startswith("--earlyoom-args=") and g >= 5:
                self.earlyoom = True
            elif arg == "-d":
                self.daemon = True
            elif arg in ("-h", "--help"):
                self.usage()
            elif arg == "--config" and g >= 4:
                self.config_file, self.config_set = value(), True
            elif arg in ("start", "stop", "status"):
                if self.launch_script:
                    say(
                        f"Error: Action '{arg}' is not compatible with --launch-script. Please omit the action or "
                        "not use --launch-script."
                    )
                    raise Exit(1)
                self.action = arg
            elif arg == "exec":
                if self.launch_script:
                    say(
                        "Error: Action 'exec' is not compatible with --launch-script. Please omit the action or not "
                        "use --launch-script."
                    )
                    raise Exit(1)
                self.action = "exec"
                self.command = self.join_command(args[i + 1 :])
                break
            elif g == 0:
                # The oldest script takes anything it does not know as the start of an exec command.
                if self.launch_script:
                    say(
                        "Error: Command is not compatible with --launch-script. Please omit the command or not use "
                        "--launch-script."
                    )
                    raise Exit(1)
                self.action = "exec"
                self.command = self.join_command(args[i:])
                break
            else:
                say(f"Error: Unknown argument or action: {arg}")
                self.usage()
            i += step
        if g >= 1 and not self.non_privileged:
            for flag in VALUE_OPTS_NEEDING_PRIVILEGE:
                if flag in " ".join(self.argv):
                    say(f"Error: {flag} can only be used with --non-privileged")
                    raise Exit(1)

    def join_command(self, words: list[str]) -> str:
        if self.g >= 2:
            return printf_q(words)
        return " ".join(words)

    # -- configuration ---------------------------------------------------------------------------------------------
    def load_config(self) -> None:
        """The .env file (2026-03-25 and newer): the script's own loading, then autodiscover's check."""
        if self.g < 4:
            return
        path = self.config_file or os.path.join(self.node.launcher_dir, ".env")
        if not os.path.isfile(path):
            if self.config_set:
                say(f"Error: Config file not found: {path}")
                raise Exit(1)
            return
        say("Loading configuration from .env file...")
        seen: set[str] = set()
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                key = line.split("=", 1)[0].strip()
                if "=" not in line or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or key in seen:
                    say("Error: Invalid .env file syntax. Aborting.")
                    raise Exit(1)
                seen.add(key)
        self.dotenv = parse_env_file(path)
        say("Loaded .env variables: " + "".join(f"DOTENV_{k} " for k in sorted(self.dotenv)))
        env = self.dotenv
        if not self.nodes_arg and env.get("CLUSTER_NODES"):
            self.nodes_arg = env["CLUSTER_NODES"]
        if not self.eth_if and env.get("ETH_IF"):
            self.eth_if = env["ETH_IF"]
        if not self.ib_if and env.get("IB_IF"):
            self.ib_if = env["IB_IF"]
        if self.master_port in ("", DEFAULT_MASTER_PORT) and env.get("MASTER_PORT"):
            self.master_port = env["MASTER_PORT"]
        if self.container in ("", DEFAULT_CONTAINER) and env.get("CONTAINER_NAME"):
            self.container = env["CONTAINER_NAME"]
        if env.get("LOCAL_IP"):
            self.local_ip = env["LOCAL_IP"]

    def build_docker_args(self) -> None:
        g = self.g
        if self.nccl_debug:
            self.docker_args += f" -e NCCL_DEBUG={self.nccl_debug}"
        if self.build_jobs:
            j = self.build_jobs
            self.docker_args += (
                f" -e MAX_JOBS={j} -e CMAKE_BUILD_PARALLEL_LEVEL={j} -e NINJAFLAGS=-j{j} -e MAKEFLAGS=-j{j}"
            )
        if g >= 1 and self.mount_cache_dirs:
            pairs = [(".cache/vllm", "/root/.cache/vllm"), (".cache/flashinfer", "/root/.cache/flashinfer")]
            pairs.append((".triton", "/root/.triton"))
            if g >= 5:
                pairs.append((".tilelang", "/root/.tilelang"))
            for rel, dest in pairs:
                path = os.path.join(self.home, rel)
                self.docker_args += f" -v {path}:{dest}"
                self.cache_dirs.append(path)
        for mapping in self.volumes:
            self.docker_args += f" -v {mapping}"
        for key in sorted(self.dotenv):
            if key.startswith("CONTAINER_") and key != "CONTAINER_NAME":
                var = key[len("CONTAINER_") :]
                self.docker_args += f" -e {var}={shlex.quote(self.dotenv[key])}"
                say(f"Adding container env: {var}")

    # -- discovery (autodiscover.sh) -------------------------------------------------------------------------------
    def detect_active_pairs(self, ibs: list[str], with_ip: list[str]) -> bool:
        """IB_IF: every active IB device; ETH_IF: the first of their interfaces with an address (no capital P first)."""
        if not self.ib_if:
            self.ib_if = ",".join(ibs)
            say(f"  Detected IB_IF: {self.ib_if}")
        if not self.eth_if:
            if not with_ip:
                say("Error: No active IB-associated interfaces have IP addresses.")
                return False
            self.eth_if = next((n for n in with_ip if "P" not in n), with_ip[0])
            say(f"  Detected ETH_IF: {self.eth_if}")
        return True

    def detect_interfaces(self) -> bool:
        if self.eth_if and self.ib_if:
            return True
        text = ibdev2netdev_text(self.node)
        if text is None:
            say("Error: ibdev2netdev not found. Cannot auto-detect interfaces.")
            return False
        say("Auto-detecting interfaces...")
        pairs = []
        for line in text.splitlines():
            if "Up)" in line:
                fields = line.split()
                if len(fields) >= 5:
                    pairs.append((fields[0], fields[4]))
        if not pairs:
            say("Error: No active IB interfaces found.")
            return False
        ibs = [ib for ib, _ in pairs]
        nets = [net for _, net in pairs]
        with_ip = [net for net in nets if iface_cidr(self.node, net)]
        if self.g < 5:
            return self.detect_active_pairs(ibs, with_ip)
        for net in nets:
            if net.startswith("enp") and "P" not in net and not iface_cidr(self.node, net):
                say(f"Error: Interface {net} (enp*, no capital P) is Up but has no IP address assigned.")
                return False
        subnets: dict[str, str] = {}
        for net in nets:
            cidr = iface_cidr(self.node, net)
            if not cidr:
                continue
            network = str(ipaddress.ip_network(cidr, strict=False))
            if network in subnets:
                say(
                    f"Error: Interfaces {net} and {subnets[network]} share the same subnet ({network}). Check "
                    "network configuration."
                )
                return False
            subnets[network] = net
        if len(pairs) == 2:
            say("  Non-mesh mode: 2 CX7 interfaces active.")
            if not self.detect_active_pairs(ibs, with_ip):
                return False
        elif len(pairs) == 4:
            say("  Mesh mode: all 4 CX7 interfaces active.")
            if not self.ib_if:
                self.ib_if = "rocep1s0f0,roceP2p1s0f0,rocep1s0f1,roceP2p1s0f1"
                say(f"  Detected IB_IF: {self.ib_if}")
            if not self.eth_if:
                for candidate in ("enP7s7", "wlP9s9"):
                    if iface_cidr(self.node, candidate):
                        self.eth_if = candidate
                        say(f"  Detected ETH_IF: {self.eth_if}")
                        break
                else:
                    say(
                        "Error: Mesh mode requires enP7s7 or wlP9s9 to be up with an IP address for cluster "
                        "coordination."
                    )
                    return False
        else:
            say(f"Error: Unexpected number of active CX7 interfaces ({len(pairs)}). Expected 2 (non-mesh) or 4 (mesh).")
            return False
        return True

    def detect_local_ip(self) -> bool:
        if self.local_ip:
            return True
        if not self.eth_if and not self.detect_interfaces():
            return False
        self.cidr = iface_cidr(self.node, self.eth_if)
        if not self.cidr:
            say(f"Error: Could not determine IP/CIDR for interface {self.eth_if}")
            return False
        self.local_ip = self.cidr.split("/")[0]
        say(f"  Detected Local IP: {self.local_ip} ({self.cidr})")
        return True

    def detect_nodes(self) -> bool:
        if not self.detect_local_ip():
            return False
        if self.nodes_arg:
            self.peers = [n.strip() for n in self.nodes_arg.split(",") if n.strip() and n.strip() != self.local_ip]
            return True
        if self.g == 4 and self.dotenv.get("COPY_HOSTS"):
            hosts = self.dotenv["COPY_HOSTS"]
            say(f"  Using COPY_HOSTS from .env: {hosts}")
            self.peers = [n.strip() for n in hosts.split(",") if n.strip()]
            self.nodes_arg = hosts
            return True
        cidr = self.cidr or f"{self.local_ip}/24"
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            network = None
        if self.g >= 5:
            say(f"Auto-detecting nodes on {cidr} (checking for NVIDIA GB10)...")
        else:
            say("Auto-detecting nodes...")
            say(f"  Scanning for SSH peers on {cidr}...")
        found = []
        for entry in self.node.cluster.get("nodes", []):
            ip = entry.get("ip")
            if not ip or ip == self.local_ip or network is None:
                continue
            try:
                if ipaddress.ip_address(ip) in network:
                    found.append(ip)
            except ValueError:
                continue
        self.peers = sorted(found)
        for ip in self.peers:
            say(f"  Found GB10 peer: {ip}" if self.g >= 5 else f"  Found peer: {ip}")
        self.nodes_arg = ",".join(sorted([self.local_ip, *self.peers]))
        say(f"  Cluster Nodes: {self.nodes_arg}")
        return True

    # -- running things on nodes -----------------------------------------------------------------------------------
    def target(self, ip: str | None) -> Node | None:
        if ip is None or ip == self.local_ip:
            return self.node
        return self.node.peer_by_ip(ip)

    def docker(self, args: list[str], capture: bool = False, quiet: bool = False, stdin=None) -> tuple[int, str]:
        """``docker ...`` on the head, from the launcher's own environment."""
        proc = subprocess.run(
            [os.path.join(self.node.bin, "docker"), *args],
            env=dict(os.environ),
            stdout=subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None),
            stderr=subprocess.DEVNULL if quiet else None,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            text=True,
            check=False,
        )
        return proc.returncode, proc.stdout or ""

    def ssh(self, ip: str, command: str, capture: bool = False, quiet: bool = False) -> tuple[int, str]:
        """``ssh -o BatchMode=yes ip "command"``: the worker's login shell runs the text.

        With the node's own ``ssh`` program (the sim's, through the worker's sshd) when it has one; otherwise
        ``bash -c`` with the worker's login environment stands in for it. Either way the worker sees nothing of
        the launcher's environment.
        """
        out = subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None)
        err = subprocess.DEVNULL if quiet else None
        program = os.path.join(self.node.bin, "ssh")
        if os.access(program, os.X_OK):
            argv = [program, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", ip, command]
            proc = subprocess.run(
                argv, env=dict(os.environ), stdout=out, stderr=err, stdin=subprocess.DEVNULL, text=True, check=False
            )
            return proc.returncode, proc.stdout or ""
        node = self.node.peer_by_ip(ip)
        if node is None:
            if not quiet:
                print(f"ssh: connect to host {ip} port 22: No route to host", file=sys.stderr, flush=True)
            return 255, ""
        env = node.login_env()
        for knob in SIM_KNOBS:
            if os.environ.get(knob):
                env[knob] = os.environ[knob]
        proc = subprocess.run(
            ["bash", "-c", command],
            env=env,
            cwd=node.dir,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            check=False,
        )
        return proc.returncode, proc.stdout or ""

    def env_flags(self, ip: str) -> str:
        pairs = [
            f"VLLM_HOST_IP={ip}",
            f"RAY_NODE_IP_ADDRESS={ip}",
            f"RAY_OVERRIDE_NODE_IP_ADDRESS={ip}",
            f"MN_IF_NAME={self.eth_if}",
            f"UCX_NET_DEVICES={self.eth_if}",
            f"NCCL_SOCKET_IFNAME={self.eth_if}",
            f"NCCL_IB_HCA={self.ib_if}",
            "NCCL_IB_DISABLE=0",
            f"OMPI_MCA_btl_tcp_if_include={self.eth_if}",
            f"GLOO_SOCKET_IFNAME={self.eth_if}",
            f"TP_SOCKET_IFNAME={self.eth_if}",
            "RAY_memory_monitor_refresh_ms=0",
            "RAY_num_prestart_python_workers=0",
            "RAY_object_store_memory=1073741824",
        ]
        return "".join(f"-e {p} " for p in pairs).strip()

    def settle(self) -> None:
        time.sleep(self.node.float_setting("SPARKSIM_LAUNCHER_SETTLE_SECONDS", None, 0.2))

    # -- actions ---------------------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if self.cluster_was_running:
            say("Cluster was already running when script started. Skipping cleanup.")
            return
        say("")
        say("Stopping cluster...")
        say(f"Stopping head node ({self.local_ip})...")
        self.docker(["stop", self.container], quiet=True)
        for worker in self.peers:
            say(f"Stopping worker node ({worker})...")
            self.ssh(worker, f"docker stop {self.container}", quiet=True)
        say("Cluster stopped.")

    def status(self) -> None:
        say("Checking status...")
        _, table = self.docker(["ps"], capture=True)
        if self.container in table:
            say(f"[HEAD] {self.local_ip}: Container '{self.container}' is RUNNING.")
            if self.g < 3 or not self.no_ray:
                say("--- Ray Status ---")
                rc, _ = self.docker(["exec", self.container, "ray", "status"])
                if rc != 0:
                    say("Failed to get ray status.")
                say("------------------")
        else:
            say(f"[HEAD] {self.local_ip}: Container '{self.container}' is NOT running.")
        for worker in self.peers:
            rc, _ = self.ssh(worker, f"docker ps | grep -q '{self.container}'")
            state = "RUNNING" if rc == 0 else "NOT running"
            say(f"[WORKER] {worker}: Container '{self.container}' is {state}.")

    def check_cluster_running(self) -> None:
        running = False
        _, names = self.docker(["ps", "--format", "{{.Names}}"], capture=True)
        if self.container in names.split():
            say(f"Warning: Container '{self.container}' is already running on head node ({self.local_ip}).")
            running = True
        for worker in self.peers:
            rc, _ = self.ssh(worker, f"docker ps --format '{{{{.Names}}}}' | grep -q '^{self.container}$'")
            if rc == 0:
                say(f"Warning: Container '{self.container}' is already running on worker node ({worker}).")
                running = True
        if running:
            say("Cluster containers are already running. Skipping launch.")
            self.cluster_was_running = True

    def verify_images(self) -> None:
        if not self.peers:
            return
        say("Verifying Docker image consistency across cluster nodes...")
        rc, head_id = self.docker(["image", "inspect", "--format", "{{.Id}}", self.image], capture=True, quiet=True)
        head_id = head_id.strip()
        if rc != 0 or not head_id:
            say(f"Error: Could not inspect image '{self.image}' on head node ({self.local_ip}).")
            say("       Make sure the image exists and is accessible to the current user.")
            raise Exit(1)
        say(f"  [HEAD] {self.local_ip}: {head_id}")
        bad = False
        for worker in self.peers:
            rc, worker_id = self.ssh(
                worker, f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(self.image)}", capture=True
            )
            worker_id = worker_id.strip()
            if rc != 0 or not worker_id:
                say(f"Error: Could not inspect image '{self.image}' on worker node ({worker}).")
                say("       The image may be missing or inaccessible to the remote user.")
                bad = True
            elif worker_id != head_id:
                say(f"Error: Docker image mismatch on worker node ({worker}):")
                say(f"       Head:   {head_id}")
                say(f"       Worker: {worker_id}")
                bad = True
            else:
                say(f"  [WORKER] {worker}: {worker_id} (match)")
        if bad:
            say(f"Error: Cluster launch aborted because image '{self.image}' is not in sync.")
            say(f"       Sync it with: ./build-and-copy.sh --no-build -t {self.image} --copy-to <worker-hosts>")
            raise Exit(1)
        say("Docker image consistency check passed.")

    def run_args(self, ip: str) -> tuple[list[str], str]:
        """The ``docker run`` options before DOCKER_ARGS (as words) and the container command for a node."""
        g = self.g
        if g == 0:
            head = ["-d", "--privileged", "--gpus", "all", "--rm", "--ipc=host", "--network", "host"]
            opts = [*head, "--name", self.container]
        else:
            if self.non_privileged:
                caps = ["--cap-add=IPC_LOCK"]
                swap = self.limits["--mem-swap-limit-gb"] or str(int(self.limits["--mem-limit-gb"] or 110) + 10)
                res = [f"--shm-size={self.limits['--shm-size-gb']}g", "--device=/dev/infiniband"]
                res += ["--memory", f"{self.limits['--mem-limit-gb']}g", "--memory-swap", f"{swap}g"]
                res += ["--pids-limit", self.limits["--pids-limit"]]
            else:
                caps, res = ["--privileged"], ["--ipc=host"]
            if g >= 5:
                nofile = os.environ.get("VLLM_SPARK_NOFILE_LIMIT", "1048576")
                res = ["--ulimit", f"nofile={nofile}:{nofile}", *res]
            env = self.env_flags(ip).split() if g >= 3 else []
            network = ["--network", "host"]
            if g >= 5 and self.ports:
                network = [w for p in self.ports for w in ("-p", p)]
            entry = ["--entrypoint="] if g >= 5 and not self.keep_entrypoint else []
            common = ["--gpus", "all", "-d", "--rm", *network, "--name", self.container, *entry]
            opts = [*caps, *res, *env, *common]
        if g >= 3 or self.solo:
            keepalive = "earlyoom" if self.earlyoom else "sleep infinity"
        elif ip == self.local_ip:
            keepalive = f"ray start --block --head --port 6379 --node-ip-address {ip}"
        else:
            keepalive = f"ray start --block --address={self.local_ip}:6379 --node-ip-address {ip}"
        return opts, keepalive

    def start_cluster(self) -> None:
        self.check_cluster_running()
        if self.cluster_was_running:
            return
        if self.g >= 5:
            self.verify_images()
        say(f"Starting Head Node on {self.local_ip}...")
        for path in self.cache_dirs:
            os.makedirs(path, exist_ok=True)
        opts, keepalive = self.run_args(self.local_ip)
        # Unquoted $DOCKER_ARGS on the head: word splitting only.
        self.docker(["run", *opts, *self.docker_args.split(), self.image, *keepalive.split()])
        for worker in self.peers:
            say(f"Starting Worker Node on {worker}...")
            if self.cache_dirs:
                self.ssh(worker, "mkdir -p " + " ".join(self.cache_dirs))
            opts, keepalive = self.run_args(worker)
            # Through ssh the remote shell re-parses the whole line, DOCKER_ARGS included.
            self.ssh(worker, f"docker run {' '.join(opts)} {self.docker_args} {self.image} {keepalive}")
        if self.launch_script:
            self.install_launch_scripts()
        if self.solo:
            self.settle()
            return
        if self.g >= 3:
            if self.no_ray:
                self.settle()
                return
            port = "6379" if self.g == 3 else self.master_port
            say(f"Starting Ray HEAD node on {self.local_ip}...")
            self.docker(
                [
                    "exec",
                    "-d",
                    self.container,
                    "bash",
                    "-c",
                    f"ray start --block --head --port {port} --object-store-memory 1073741824 --num-cpus 2 "
                    f"--node-ip-address {self.local_ip} --include-dashboard=false --disable-usage-stats "
                    ">> /proc/1/fd/1 2>&1",
                ]
            )
            for worker in self.peers:
                say(f"Starting Ray WORKER node on {worker}...")
                self.ssh(
                    worker,
                    f"docker exec -d {self.container} bash -c 'ray start --block --object-store-memory 1073741824 "
                    f"--num-cpus 2 --disable-usage-stats --address={self.local_ip}:{port} --node-ip-address {worker} "
                    ">> /proc/1/fd/1 2>&1'",
                )
        say("Waiting for cluster to be ready...")
        for _ in range(100):
            rc, _ = self.docker(["exec", self.container, "ray", "status"], quiet=True)
            if rc == 0:
                say("Cluster head is responsive.")
                self.settle()
                return
            time.sleep(0.1)
        say("Timeout waiting for cluster to start.")
        raise Exit(1)

    # -- launch scripts --------------------------------------------------------------------------------------------
    def resolve_launch_script(self) -> None:
        path = self.launch_script
        examples = os.path.join(self.node.launcher_dir, "examples")
        for candidate in (path, os.path.join(examples, path), os.path.join(examples, f"{path}.sh")):
            if os.path.isfile(candidate):
                self.launch_script = os.path.realpath(candidate)
                break
        else:
            say(f"Error: Launch script '{path}' not found.")
            say("Searched in:")
            say(f"  - {path}")
            say(f"  - {examples}/{path}")
            say(f"  - {examples}/{path}.sh")
            raise Exit(1)
        say(f"Using launch script: {self.launch_script}")
        self.command = CONTAINER_EXEC_SCRIPT
        self.launch_script_mode = True
        if self.action in ("", "start"):
            self.action = "exec"

    def node_script(self, text: str, total: int, rank: int) -> str:
        extra = f"--nnodes {total} --node-rank {rank} --master-addr {self.local_ip}"
        if self.g >= 4:
            extra += f" --master-port {self.master_port}"
        if rank:
            extra += " --headless"
        if self.g == 3:
            lines = [ln for ln in text.splitlines() if "--distributed-executor-backend" not in ln]
        else:
            if self.g >= 5:
                text = re.sub(r"--distributed-executor-backend(=|\s+)\S+", "", text)
            else:
                text = re.sub(r"--distributed-executor-backend\s*\S*", "", text, count=1)
            lines = [ln for ln in text.splitlines() if not re.fullmatch(r"[\s\\]*", ln)]
        if lines:
            if self.g >= 4:
                lines[-1] = re.sub(r"\s*\\\s*$", "", lines[-1])
            lines[-1] += f" {extra}"
        return "\n".join(lines) + "\n"

    def install_launch_scripts(self) -> None:
        with open(self.launch_script, encoding="utf-8") as fh:
            text = fh.read()
        total = 1 + len(self.peers)
        if self.no_ray and self.g >= 3 and self.peers:
            self.copy_script(None, self.node_script(text, total, 0), f"head node ({self.local_ip})")
            for rank, worker in enumerate(self.peers, start=1):
                self.copy_script(worker, self.node_script(text, total, rank), f"worker {worker}")
            return
        body = text
        if self.g >= 5 and not self.solo and self.peers and _needs_ray_backend(text):
            print("Adding --distributed-executor-backend ray to launch script for Ray mode.", file=sys.stderr)
            lines = text.rstrip("\n").splitlines() or [""]
            lines[-1] = re.sub(r"\s*\\\s*$", "", lines[-1]) + " --distributed-executor-backend ray"
            body = "\n".join(lines) + "\n"
        self.copy_script(None, body, "head node")

    def copy_script(self, worker: str | None, body: str, label: str) -> None:
        """A (patched) copy of the launch script into a container as /workspace/exec-script.sh."""
        fd, tmp = tempfile.mkstemp(prefix="vllm_node_script_", suffix=".sh")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
            os.chmod(tmp, 0o755)
            say(f"Copying launch script to {label}...")
            if worker is None:
                if self.g >= 5:
                    self.docker(["exec", "-w", "/", self.container, "mkdir", "-p", "/workspace"])
                rc, _ = self.docker(["cp", tmp, f"{self.container}:{CONTAINER_EXEC_SCRIPT}"])
                if rc != 0:
                    say(f"Error: docker cp to {label} failed")
                    raise Exit(1)
                self.docker(["exec", self.container, "chmod", "+x", CONTAINER_EXEC_SCRIPT])
            else:
                mkdir = f"docker exec -w / {self.container} mkdir -p /workspace && " if self.g >= 5 else ""
                rc, _ = self.ssh(
                    worker,
                    f"{mkdir}docker cp {tmp} {self.container}:{CONTAINER_EXEC_SCRIPT} && "
                    f"docker exec {self.container} chmod +x {CONTAINER_EXEC_SCRIPT}",
                )
                if rc != 0:
                    say(f"Error: docker cp to worker {worker} failed")
                    raise Exit(1)
        finally:
            os.unlink(tmp)

    # -- exec ------------------------------------------------------------------------------------------------------
    def interactive_flags(self) -> list[str]:
        return ["-it"] if sys.stdin.isatty() else ["-i"]

    def exec_on_head(self, cmd: str) -> int:
        g = self.g
        if g == 0 or not self.daemon:
            if g <= 2:
                inner = ["bash", "-i", "-c", cmd]
            elif g == 3:
                inner = cmd.split()
            else:
                inner = ["bash", "-c", cmd]
            rc, _ = self.docker(["exec", *self.interactive_flags(), self.container, *inner], stdin=sys.stdin)
            return rc
        if g <= 2:
            payload = (
                "eval \"$(sed -n '/export VLLM_HOST_IP/,$p' /root/.bashrc)\" && "
                f"{{ {cmd}; }} >> /proc/1/fd/1 2>> /proc/1/fd/2"
            )
        else:
            payload = f"{cmd} >> /proc/1/fd/1 2>&1"
        self.docker(["exec", "-d", self.container, "bash", "-c", payload])
        say(f"Command dispatched in background (Daemon mode). Container: {self.container}")
        return 0

    def strip_backend(self, cmd: str) -> str:
        if self.g >= 5:
            return re.sub(r"--distributed-executor-backend(=|\s+)\S+", "", cmd)
        return re.sub(r"--distributed-executor-backend\s*\S*", "", cmd, count=1)

    def exec_no_ray_cluster(self, base: str) -> int:
        total = 1 + len(self.peers)
        port = f" --master-port {self.master_port}" if self.g >= 4 else ""
        for rank, worker in enumerate(self.peers, start=1):
            if self.launch_script_mode:
                worker_cmd = base
            else:
                worker_cmd = (
                    f"{self.strip_backend(base)} --nnodes {total} --node-rank {rank} --master-addr {self.local_ip}"
                    f"{port} --headless"
                )
            say(f"Launching worker (rank {rank}) on {worker}...")
            payload = f"{worker_cmd} >> /proc/1/fd/1 2>&1"
            if self.g >= 5:
                remote = f"docker exec -d {printf_q([self.container])} bash -c {printf_q([payload])}"
            else:
                remote = f'docker exec -d {self.container} bash -c "{payload}"'
            self.ssh(worker, remote)
        if self.launch_script_mode:
            head_cmd = base
        else:
            head_cmd = f"{self.strip_backend(base)} --nnodes {total} --node-rank 0 --master-addr {self.local_ip}{port}"
        say(f"Executing command on head node (rank 0): {head_cmd}")
        if self.daemon:
            self.docker(["exec", "-d", self.container, "bash", "-c", f"{head_cmd} >> /proc/1/fd/1 2>&1"])
            say(f"Command dispatched in background (Daemon mode). Container: {self.container}")
            return 0
        inner = head_cmd.split() if self.g == 3 else ["bash", "-c", head_cmd]
        rc, _ = self.docker(["exec", *self.interactive_flags(), self.container, *inner], stdin=sys.stdin)
        return rc

    def check_parallelism(self) -> None:
        if self.solo or not self.peers:
            return
        if self.launch_script_mode:
            with open(self.launch_script, encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = self.command
        text = re.sub(r"(--[a-z-]*)=", r"\1 ", text)
        sizes = {"tp": 1, "pp": 1, "dp": 1}
        keys = {
            "-tp": "tp",
            "--tensor-parallel-size": "tp",
            "-pp": "pp",
            "--pipeline-parallel-size": "pp",
            "-dp": "dp",
            "--data-parallel-size": "dp",
        }
        found = False
        prev = ""
        for word in text.split():
            key = keys.get(prev)
            if key and word.isdigit():
                sizes[key] = int(word)
                found = True
            prev = word
        if not found:
            return
        required = sizes["tp"] * sizes["pp"] * sizes["dp"]
        total = 1 + len(self.peers)
        detail = f"tp={sizes['tp']} * pp={sizes['pp']} * dp={sizes['dp']}"
        if required > total:
            say(f"Error: Command requires {required} nodes ({detail}) but only {total} node(s) are configured.")
            raise Exit(1)
        if required < total:
            say(
                f"Note: Command requires {required} node(s) ({detail}); using {required} of {total} configured node(s)."
            )
            self.peers = self.peers[: required - 1]

    def check_fail_launch(self) -> None:
        text = self.command
        if self.launch_script_mode:
            with open(self.launch_script, encoding="utf-8") as fh:
                text += fh.read()
        if self.node.fail_mode() == "fail-launch" or fail_mode_for_text(text) == "fail-launch":
            say(
                f"Error: Failed to prepare cluster launch on head node ({self.local_ip}): the launch was refused "
                "(simulated failure, sim/fail-launch)."
            )
            raise Exit(1)

    # -- main flow -------------------------------------------------------------------------------------------------
    def select_nodes(self) -> None:
        g = self.g
        if self.solo:
            if g <= 4 and self.nodes_arg:
                say("Error: --solo is incompatible with -n/--nodes.")
                raise Exit(1)
            if g <= 3 or not self.local_ip:
                self.local_ip = "127.0.0.1"
            self.nodes_arg = self.local_ip
            self.peers = []
            say("Solo mode enabled. Skipping node detection.")
        else:
            if not self.detect_interfaces() or not self.detect_nodes():
                raise Exit(1)
        if not self.nodes_arg:
            say("Error: Nodes argument (-n) is mandatory or could not be auto-detected.")
            self.usage()
        if not self.solo and not self.detect_local_ip():
            raise Exit(1)
        if self.local_ip not in [n.strip() for n in self.nodes_arg.split(",")]:
            say(f"Error: Local IP ({self.local_ip}) is not in the list of nodes ({self.nodes_arg}).")
            raise Exit(1)
        if not self.solo and not self.peers:
            say("Only local node detected/configured. Activating solo mode (no Ray cluster).")
            self.solo = True
        if self.solo and g >= 5:
            if self.ray_explicit:
                say("Error: --ray is incompatible with --solo or a single-node configuration.")
                raise Exit(1)
            if self.no_ray_explicit:
                say("Error: --no-ray is incompatible with --solo or a single-node configuration.")
                raise Exit(1)
        if self.solo and self.no_ray:
            if g in (3, 4):
                say("Warning: Only one node detected; --no-ray has no effect in solo mode. Proceeding normally.")
            self.no_ray = False
        if self.ports and not self.solo:
            say(
                "Error: -p/--publish port forwarding is only supported in solo mode. Use --solo or remove port "
                "mappings for cluster mode."
            )
            raise Exit(1)

    def run(self) -> int:
        g = self.g
        self.parse()
        self.load_config()
        self.build_docker_args()
        if self.launch_script:
            self.resolve_launch_script()
        for mod in self.mods:
            if not os.path.exists(mod):
                say(f"Error: Mod path '{mod}' does not exist.")
                raise Exit(1)
        self.select_nodes()

        say(f"Head Node: {self.local_ip}")
        say(f"Worker Nodes: {' '.join(self.peers)}")
        say(f"Container Name: {self.container}")
        say(f"Image Name: {self.image}")
        say(f"Action: {self.action}")

        if (self.action in ("start", "exec") or self.check_config) and self.peers:
            say("Checking SSH connectivity to worker nodes...")
            for worker in self.peers:
                if self.ssh(worker, "true", quiet=True)[0] != 0:
                    say(f"Error: Passwordless SSH to {worker} failed.")
                    say("  Please ensure SSH keys are configured and the host is reachable.")
                    raise Exit(1)
                say(f"  SSH to {worker}: OK")
        if g >= 5 and not self.action and not self.launch_script_mode and not self.check_config:
            say("Error: No action specified. Use: start | stop | status | exec")
            self.usage()
        if self.check_config:
            say("Configuration Check Complete.")
            say(f"  Image Name: {self.image}")
            say(f"  ETH Interface: {self.eth_if}")
            say(f"  IB Interface: {self.ib_if}")
            if g >= 1:
                say(f"  Docker Args: {self.docker_args}")
            if g >= 5:
                say("  Docker Network: host")
            if g >= 1:
                say(f"  Mounting Cache Dirs: {' '.join(self.cache_dirs) if self.mount_cache_dirs else '(Disabled)'}")
            return 0
        if self.action == "stop":
            self.cleanup()
            return 0
        if self.action == "status":
            self.status()
            return 0

        # Without daemon mode (and, in the oldest script, for every exec) the cluster stops when this script exits.
        if not self.daemon or (g == 0 and self.action == "exec"):
            self.cleanup_armed = True
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, _raise_exit)

        if self.action == "exec":
            if g >= 5 and not self.solo and not self.no_ray and not self.launch_script_mode:
                if _needs_ray_backend(self.command):
                    print("Adding --distributed-executor-backend ray for Ray mode.", file=sys.stderr, flush=True)
                    self.command = f"{self.command} --distributed-executor-backend ray"
            if g >= 5:
                self.check_parallelism()
            self.check_fail_launch()
            self.start_cluster()
            if g <= 2:
                say(f"Executing command on head node: {self.command}")
                return self.exec_on_head(self.command)
            say(f"Executing command: {self.command}")
            if self.no_ray and self.peers and (self.launch_script_mode or "vllm serve" in self.command):
                return self.exec_no_ray_cluster(self.command)
            return self.exec_on_head(self.command)
        if self.action == "start":
            self.check_fail_launch()
            self.start_cluster()
            if self.daemon:
                say("Cluster started in background (Daemon mode).")
                return 0
            say("Cluster started. Tailing logs from head node...")
            say("Press Ctrl+C to stop the cluster.")
            rc, _ = self.docker(["logs", "-f", self.container])
            return rc
        return 0


def _needs_ray_backend(text: str) -> bool:
    return bool(re.search(r"(^|\s)vllm\s+serve(\s|$)", text)) and not re.search(
        r"--distributed-executor-backend(=|\s|$)", text
    )


def _raise_exit(signum, frame) -> None:
    raise Exit(128 + signum)


def main(node: Node, argv: list[str]) -> int:
    launcher = Launcher(node, argv)
    try:
        return launcher.run()
    except Exit as exc:
        return exc.code
    finally:
        if launcher.cleanup_armed:
            try:
                launcher.cleanup()
            except Exit:
                pass
