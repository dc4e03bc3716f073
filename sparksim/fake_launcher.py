"""A fake ``launch-cluster.sh`` (eugr/spark-vllm-docker) for the simulated cluster.

It follows the real launcher step by step (see ``reference/launch-cluster.md``): options before the
action, ``.env`` loading, node detection and the local-IP check, the parallelism check, the
"already running" reuse, ``docker run ... sleep infinity`` on every node, then ``docker exec``
of the command (in the background with ``-d``; in the foreground otherwise, stopping the cluster
when it ends). Multi-node ``vllm serve`` commands get the no-Ray rank flags of the September 2026
launcher (``--nnodes/--node-rank/--master-addr/--master-port``, ``--headless`` on workers).

Where the real script SSHes to a worker, this one runs the worker's fake ``docker`` directly with
the worker's login environment; sim IPs map to nodes through ``<root>/cluster.json``.

Node settings: ``SPARKSIM_LAUNCHER_VERSION=old`` gives a pre-2026 launcher (``--help`` without
``--launch-script``/``--ray``; ``-d`` ignored by ``exec``; Ray for multi-node);
``SPARKSIM_LAUNCHER_SETTLE_SECONDS`` replaces the real script's 2 s pause after starting
containers (default 0.2).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

from sparksim.common import SIM_KNOBS, Node, fail_mode_for_text, parse_env_file

DEFAULT_IMAGE = "vllm-node"
DEFAULT_CONTAINER = "vllm_node"
DEFAULT_MASTER_PORT = "29501"
DEFAULT_ETH_IF = "enp1s0f1np1"
DEFAULT_IB_IF = "rocep1s0f1,roceP2p1s0f1"
CONTAINER_EXEC_SCRIPT = "/workspace/exec-script.sh"


class Exit(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def say(*parts: str) -> None:
    print(*parts, flush=True)


class Launcher:
    def __init__(self, node: Node, argv: list[str]):
        self.node = node
        self.argv = argv
        self.old = (node.setting("SPARKSIM_LAUNCHER_VERSION") or "").lower() == "old"
        self.script = f"./{os.path.basename(sys.argv[0]) or 'launch-cluster.sh'}"
        hf_cache = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("HOME") or node.dir, ".cache", "huggingface"
        )
        self.docker_args: list[str] = [
            "-e",
            "NCCL_IGNORE_CPU_AFFINITY=1",
            "-e",
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True",
            "-v",
            f"{hf_cache}:/root/.cache/huggingface",
        ]
        extra = os.environ.get("VLLM_SPARK_EXTRA_DOCKER_ARGS")
        if extra:
            # The real script appends the variable unquoted: plain word splitting, no shell quoting.
            self.docker_args += extra.split()
        self.image = DEFAULT_IMAGE
        self.container = DEFAULT_CONTAINER
        self.nodes_arg = ""
        self.eth_if = ""
        self.ib_if = ""
        self.master_port = DEFAULT_MASTER_PORT
        self.daemon = False
        self.solo = False
        self.no_ray = not self.old
        self.no_ray_explicit = False
        self.ray_explicit = False
        self.check_config = False
        self.mount_cache_dirs = True
        self.launch_script = ""
        self.config_file = ""
        self.action = ""
        self.command_argv: list[str] | None = None
        self.command = ""
        self.volumes: list[str] = []
        self.local_ip = os.environ.get("LOCAL_IP", "")
        self.peers: list[str] = []
        self.cluster_was_running = False
        self.cleanup_armed = False
        self.cleaned = False

    # -- usage ---------------------------------------------------------------------------------
    def usage(self) -> None:
        lines = [
            f"Usage: {self.script} [-n <node_ips>] [-t <image_name>] [--name <container_name>] [--eth-if <if_name>] "
            f"[--ib-if <if_name>] [--nccl-debug <level>] [--check-config] [--solo]"
            + ("" if self.old else " [--ray|--no-ray]")
            + " [-v <local:container>] [-d] [action] [command]",
            "  -n, --nodes     Comma-separated list of node IPs (Optional, auto-detected if omitted)",
            f"  -t              Docker image name (Optional, default: {DEFAULT_IMAGE})",
            f"  --name          Container name (Optional, default: {DEFAULT_CONTAINER})",
            "  --eth-if        Ethernet interface (Optional, auto-detected)",
            "  --ib-if         InfiniBand interface (Optional, auto-detected)",
            "  -e, --env       Environment variable to pass to container (e.g. -e VAR=val)",
            "  --nccl-debug    NCCL debug level (Optional, one of: VERSION, WARN, INFO, TRACE)",
            "  --apply-mod     Path to directory or zip file containing run.sh to apply before launch",
        ]
        if not self.old:
            lines.append(
                "  --launch-script Path to bash script to execute in the container (from examples/ directory "
                "or absolute path). If launch script is specified, action should be omitted."
            )
        lines += [
            "  --check-config  Check configuration and auto-detection without launching",
            "  --solo          Solo mode: skip autodetection, launch only on current node, do not launch Ray cluster",
            "  --master-port   Port for cluster coordination: Ray head port or PyTorch distributed master port "
            f"(default: {DEFAULT_MASTER_PORT})",
            "  -v, --volume    Map a volume in Docker format (e.g. -v /local/path:/container/path). Can be specified "
            "multiple times.",
        ]
        if not self.old:
            lines += [
                "  --ray           Use Ray for multi-node vLLM and add --distributed-executor-backend ray if missing",
                "  --no-ray        Default for multi-node vLLM without Ray (accepted for compatibility)",
            ]
        lines += [
            "  --no-cache-dirs Do not mount default cache directories (~/.cache/vllm, ~/.cache/flashinfer, ~/.triton, "
            "~/.tilelang)",
            "  -d              Daemon mode (only for 'start' action)",
            "  --config        Path to .env configuration file (default: .env in script directory)",
            "  action          start | stop | status | exec (Default: start).",
            "  command         Command to run (only for 'exec' action).",
            "",
            "Supported .env file variables:",
            "  CLUSTER_NODES       Comma-separated list of node IPs",
            "  ETH_IF              Ethernet interface name",
            "  IB_IF               InfiniBand interface name",
            f"  MASTER_PORT         Port for cluster coordination (default: {DEFAULT_MASTER_PORT})",
            f"  CONTAINER_NAME      Container name (default: {DEFAULT_CONTAINER})",
            "  LOCAL_IP            Local IP address (for solo mode or override auto-detection)",
            "  CONTAINER_*         Any variable starting with CONTAINER_ (except CONTAINER_NAME) becomes -e flag.",
        ]
        say("\n".join(lines))
        raise Exit(1)

    # -- argument parsing ------------------------------------------------------------------------
    def parse(self) -> None:
        args = list(self.argv)
        i = 0

        def value() -> str:
            return args[i + 1] if i + 1 < len(args) else ""

        while i < len(args):
            arg = args[i]
            step = 2
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
                self.docker_args += ["-e", *value().split()]
            elif arg in (
                "-j",
                "--apply-mod",
                "--apply-vllm-pr",
                "--mem-limit-gb",
                "--mem-swap-limit-gb",
                "--pids-limit",
                "--shm-size-gb",
                "--earlyoom-args",
            ):
                pass
            elif arg == "--launch-script" and not self.old:
                self.launch_script = value()
            elif arg == "--nccl-debug":
                level = value()
                if level in ("VERSION", "WARN", "INFO", "TRACE"):
                    self.docker_args += ["-e", f"NCCL_DEBUG={level}"]
                else:
                    self.docker_args += ["-e", "NCCL_DEBUG=INFO"]
                    step = 1
            elif arg in ("--master-port", "--head-port"):
                self.master_port = value()
            elif arg in ("-v", "--volume"):
                self.volumes.append(value())
            elif arg.startswith(("-v=", "--volume=")):
                self.volumes.append(arg.split("=", 1)[1])
                step = 1
            elif arg == "--check-config":
                self.check_config, step = True, 1
            elif arg == "--solo":
                self.solo, step = True, 1
            elif arg == "--ray" and not self.old:
                if self.no_ray_explicit:
                    say("Error: --ray and --no-ray are mutually exclusive.")
                    raise Exit(1)
                self.no_ray, self.ray_explicit, step = False, True, 1
            elif arg == "--no-ray" and not self.old:
                if self.ray_explicit:
                    say("Error: --ray and --no-ray are mutually exclusive.")
                    raise Exit(1)
                self.no_ray, self.no_ray_explicit, step = True, True, 1
            elif arg in ("--no-cache-dirs",):
                self.mount_cache_dirs, step = False, 1
            elif arg in ("--keep-entrypoint", "--earlyoom", "--non-privileged", "--setup", "--discover"):
                step = 1
            elif arg == "-d":
                self.daemon, step = True, 1
            elif arg in ("-h", "--help"):
                self.usage()
            elif arg == "--config":
                self.config_file = value()
            elif arg in ("start", "stop", "status"):
                if self.launch_script:
                    say(
                        f"Error: Action '{arg}' is not compatible with --launch-script. Please omit the action or "
                        f"not use --launch-script."
                    )
                    raise Exit(1)
                self.action, step = arg, 1
            elif arg == "exec":
                if self.launch_script:
                    say(
                        "Error: Action 'exec' is not compatible with --launch-script. Please omit the action or not "
                        "use --launch-script."
                    )
                    raise Exit(1)
                self.action = "exec"
                self.command_argv = args[i + 1 :]
                self.command = "".join(shlex.quote(a) + " " for a in self.command_argv)
                break
            else:
                say(f"Error: Unknown argument or action: {arg}")
                self.usage()
            i += step

    # -- configuration ----------------------------------------------------------------------------
    def load_config(self) -> dict[str, str]:
        explicit = bool(self.config_file)
        path = self.config_file or os.path.join(self.node.launcher_dir, ".env")
        if explicit and not os.path.isfile(path):
            say(f"Error: Config file not found: {path}")
            raise Exit(1)
        if not os.path.isfile(path):
            return {}
        say("Loading configuration from .env file...")
        values = parse_env_file(path)
        say("Loaded .env variables: " + " ".join(f"DOTENV_{k}" for k in values))
        if not self.nodes_arg and values.get("CLUSTER_NODES"):
            self.nodes_arg = values["CLUSTER_NODES"]
        if not self.eth_if and values.get("ETH_IF"):
            self.eth_if = values["ETH_IF"]
        if not self.ib_if and values.get("IB_IF"):
            self.ib_if = values["IB_IF"]
        if self.master_port == DEFAULT_MASTER_PORT and values.get("MASTER_PORT"):
            self.master_port = values["MASTER_PORT"]
        if self.container == DEFAULT_CONTAINER and values.get("CONTAINER_NAME"):
            self.container = values["CONTAINER_NAME"]
        if values.get("LOCAL_IP"):
            self.local_ip = values["LOCAL_IP"]
        for key, val in values.items():
            if key.startswith("CONTAINER_") and key != "CONTAINER_NAME":
                var = key[len("CONTAINER_") :]
                self.docker_args += ["-e", f"{var}={val}"]
                say(f"Adding container env: {var}")
        return values

    def detect_interfaces(self) -> None:
        if self.eth_if and self.ib_if:
            return
        say("Auto-detecting interfaces...")
        say("  Non-mesh mode: 2 CX7 interfaces active.")
        if not self.ib_if:
            self.ib_if = DEFAULT_IB_IF
            say(f"  Detected IB_IF: {self.ib_if}")
        if not self.eth_if:
            self.eth_if = DEFAULT_ETH_IF
            say(f"  Detected ETH_IF: {self.eth_if}")

    def detect_local_ip(self) -> None:
        if self.local_ip:
            return
        if not self.eth_if:
            self.detect_interfaces()
        self.local_ip = self.node.ip
        say(f"  Detected Local IP: {self.local_ip} ({self.local_ip}/24)")

    def detect_nodes(self) -> None:
        self.detect_local_ip()
        if self.nodes_arg:
            self.peers = [n.strip() for n in self.nodes_arg.split(",") if n.strip() and n.strip() != self.local_ip]
            return
        say(f"Auto-detecting nodes on {self.local_ip}/24 (checking for NVIDIA GB10)...")
        self.peers = []
        for entry in self.node.cluster.get("nodes", []):
            if entry.get("ip") and entry["ip"] != self.local_ip:
                self.peers.append(entry["ip"])
                say(f"  Found GB10 peer: {entry['ip']}")
        self.nodes_arg = ",".join(sorted([self.local_ip, *self.peers]))
        say(f"  Cluster Nodes: {self.nodes_arg}")

    # -- docker on a node --------------------------------------------------------------------------
    def target(self, ip: str | None) -> Node | None:
        if ip is None or ip == self.local_ip:
            return self.node
        return self.node.peer_by_ip(ip)

    def docker(
        self, ip: str | None, args: list[str], capture: bool = False, quiet: bool = False, stdin=None
    ) -> tuple[int, str]:
        node = self.target(ip)
        if node is None:
            # ssh to an unknown host fails
            return 255, ""
        if node is self.node:
            env = dict(os.environ)
        else:
            env = node.login_env()
            for knob in SIM_KNOBS:
                if os.environ.get(knob):
                    env[knob] = os.environ[knob]
        out = subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None)
        err = subprocess.DEVNULL if quiet else None
        proc = subprocess.run(
            [os.path.join(node.bin, "docker"), *args],
            env=env,
            stdout=out,
            stderr=err,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            text=True,
        )
        return proc.returncode, proc.stdout or ""

    def env_flags(self, ip: str) -> list[str]:
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
        out: list[str] = []
        for pair in pairs:
            out += ["-e", pair]
        return out

    # -- actions ----------------------------------------------------------------------------------
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
        self.docker(None, ["stop", self.container], quiet=True)
        for worker in self.peers:
            say(f"Stopping worker node ({worker})...")
            self.docker(worker, ["stop", self.container], quiet=True)
        say("Cluster stopped.")

    def status(self) -> None:
        say("Checking status...")
        _, table = self.docker(None, ["ps"], capture=True)
        if self.container in table:
            say(f"[HEAD] {self.local_ip}: Container '{self.container}' is RUNNING.")
            if not self.no_ray:
                say("--- Ray Status ---")
                rc, _ = self.docker(None, ["exec", self.container, "ray", "status"])
                if rc != 0:
                    say("Failed to get ray status.")
                say("------------------")
        else:
            say(f"[HEAD] {self.local_ip}: Container '{self.container}' is NOT running.")
        for worker in self.peers:
            rc, table = self.docker(worker, ["ps"], capture=True)
            state = "RUNNING" if rc == 0 and self.container in table else "NOT running"
            say(f"[WORKER] {worker}: Container '{self.container}' is {state}.")

    def running_on(self, ip: str | None) -> bool:
        rc, names = self.docker(ip, ["ps", "--format", "{{.Names}}"], capture=True)
        return rc == 0 and self.container in names.split()

    def start_cluster(self) -> bool:
        running = False
        if self.running_on(None):
            say(f"Warning: Container '{self.container}' is already running on head node ({self.local_ip}).")
            running = True
        for worker in self.peers:
            if self.running_on(worker):
                say(f"Warning: Container '{self.container}' is already running on worker node ({worker}).")
                running = True
        if running:
            say("Cluster containers are already running. Skipping launch.")
            self.cluster_was_running = True
            return True

        if self.peers and not self.old:
            say("Verifying Docker image consistency across cluster nodes...")
            rc, head_id = self.docker(
                None, ["image", "inspect", "--format", "{{.Id}}", self.image], capture=True, quiet=False
            )
            head_id = head_id.strip()
            if rc != 0 or not head_id:
                say(f"Error: Could not inspect image '{self.image}' on head node ({self.local_ip}).")
                say("       Make sure the image exists and is accessible to the current user.")
                return False
            say(f"  [HEAD] {self.local_ip}: {head_id}")
            mismatch = False
            for worker in self.peers:
                rc, worker_id = self.docker(
                    worker, ["image", "inspect", "--format", "{{.Id}}", self.image], capture=True, quiet=True
                )
                worker_id = worker_id.strip()
                if rc != 0 or not worker_id:
                    say(f"Error: Could not inspect image '{self.image}' on worker node ({worker}).")
                    say("       The image may be missing or inaccessible to the remote user.")
                    mismatch = True
                elif worker_id != head_id:
                    say(f"Error: Docker image mismatch on worker node ({worker}):")
                    say(f"       Head:   {head_id}")
                    say(f"       Worker: {worker_id}")
                    mismatch = True
                else:
                    say(f"  [WORKER] {worker}: {worker_id} (match)")
            if mismatch:
                say(f"Error: Cluster launch aborted because image '{self.image}' is not in sync.")
                return False
            say("Docker image consistency check passed.")

        common = [
            "--gpus",
            "all",
            "-d",
            "--rm",
            "--network",
            "host",
            "--name",
            self.container,
            "--entrypoint=",
            *self.docker_args,
            self.image,
        ]
        caps = ["--privileged", "--ulimit", "nofile=1048576:1048576", "--ipc=host"]
        keepalive = ["sleep", "infinity"]
        say(f"Starting Head Node on {self.local_ip}...")
        for path in self.cache_dirs(self.node):
            os.makedirs(path, exist_ok=True)
        rc, _ = self.docker(None, ["run", *caps, *self.env_flags(self.local_ip), *common, *keepalive])
        if rc != 0:
            say(f"Error: Failed to start container '{self.container}' on head node ({self.local_ip}).")
            return False
        for worker in self.peers:
            say(f"Starting Worker Node on {worker}...")
            rc, _ = self.docker(worker, ["run", *caps, *self.env_flags(worker), *common, *keepalive])
            if rc != 0:
                say(f"Error: Failed to start container '{self.container}' on worker node ({worker}).")
                return False

        if self.launch_script:
            self.install_launch_scripts()

        if not self.solo and not self.no_ray:
            say(f"Starting Ray HEAD node on {self.local_ip}...")
            self.docker(
                None,
                [
                    "exec",
                    "-d",
                    self.container,
                    "bash",
                    "-c",
                    f"ray start --block --head --port {self.master_port} --node-ip-address "
                    f"{self.local_ip} >> /proc/1/fd/1 2>&1",
                ],
            )
            for worker in self.peers:
                say(f"Starting Ray WORKER node on {worker}...")
                self.docker(
                    worker,
                    [
                        "exec",
                        "-d",
                        self.container,
                        "bash",
                        "-c",
                        f"ray start --block --address={self.local_ip}:{self.master_port} "
                        f"--node-ip-address {worker} >> /proc/1/fd/1 2>&1",
                    ],
                )
            say("Waiting for cluster to be ready...")
            for _ in range(50):
                rc, _ = self.docker(None, ["exec", self.container, "ray", "status"], quiet=True)
                if rc == 0:
                    say("Cluster head is responsive.")
                    break
                time.sleep(0.1)
            else:
                say("Timeout waiting for cluster to start.")
                raise Exit(1)
        time.sleep(self.node.float_setting("SPARKSIM_LAUNCHER_SETTLE_SECONDS", None, 0.2))
        return True

    def cache_dirs(self, node: Node) -> list[str]:
        if not self.mount_cache_dirs:
            return []
        home = os.environ.get("HOME") or node.dir
        return [
            os.path.join(home, ".cache", "vllm"),
            os.path.join(home, ".cache", "flashinfer"),
            os.path.join(home, ".triton"),
            os.path.join(home, ".tilelang"),
        ]

    def add_cache_mounts(self) -> None:
        for path, dest in zip(
            self.cache_dirs(self.node),
            ("/root/.cache/vllm", "/root/.cache/flashinfer", "/root/.triton", "/root/.tilelang"),
            strict=True,
        ):
            self.docker_args += ["-v", f"{path}:{dest}"]

    # -- launch scripts ----------------------------------------------------------------------------
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
        if self.action in ("", "start"):
            self.action = "exec"

    def _script_path_in(self, node: Node) -> str:
        # The simulated container sees the host filesystem: its /workspace lives in the container dir.
        return os.path.join(node.containers_dir, self.container, "rootfs", "workspace", "exec-script.sh")

    def install_launch_scripts(self) -> None:
        with open(self.launch_script, encoding="utf-8") as fh:
            text = fh.read()
        nodes = [(None, self.node), *[(w, self.target(w)) for w in self.peers]]
        total = len(nodes)
        for rank, (_ip, node) in enumerate(nodes):
            if node is None:
                continue
            body = text
            if self.no_ray and total > 1:
                body = re.sub(r"--distributed-executor-backend(=|\s+)\S+", "", body)
                lines = [ln for ln in body.splitlines() if not re.fullmatch(r"[\s\\]*", ln)]
                extra = (
                    f" --nnodes {total} --node-rank {rank} --master-addr {self.local_ip} "
                    f"--master-port {self.master_port}" + (" --headless" if rank else "")
                )
                if lines:
                    lines[-1] = re.sub(r"\s*\\\s*$", "", lines[-1]) + extra
                body = "\n".join(lines) + "\n"
            dest = self._script_path_in(node)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "w", encoding="utf-8") as fh:
                fh.write(body)
            os.chmod(dest, 0o755)
            say(f"Copying launch script to {'head node' if rank == 0 else 'worker'}...")

    def command_for(self, node: Node) -> str:
        if self.launch_script:
            return self._script_path_in(node)
        return self.command

    # -- exec -----------------------------------------------------------------------------------
    def exec_on_head(self, cmd: str) -> int:
        if self.daemon and not self.old:
            self.docker(None, ["exec", "-d", self.container, "bash", "-c", f"{cmd} >> /proc/1/fd/1 2>&1"])
            say(f"Command dispatched in background (Daemon mode). Container: {self.container}")
            return 0
        flags = ["-it"] if sys.stdin.isatty() else ["-i"]
        rc, _ = self.docker(None, ["exec", *flags, self.container, "bash", "-c", cmd], stdin=sys.stdin)
        return rc

    def exec_no_ray_cluster(self) -> int:
        total = 1 + len(self.peers)
        for rank, worker in enumerate(self.peers, start=1):
            target = self.target(worker)
            if self.launch_script:
                worker_cmd = self.command_for(target) if target else self.command
            else:
                clean = re.sub(r"--distributed-executor-backend(=|\s+)\S+", "", self.command)
                worker_cmd = (
                    f"{clean} --nnodes {total} --node-rank {rank} --master-addr {self.local_ip} "
                    f"--master-port {self.master_port} --headless"
                )
            say(f"Launching worker (rank {rank}) on {worker}...")
            self.docker(worker, ["exec", "-d", self.container, "bash", "-c", f"{worker_cmd} >> /proc/1/fd/1 2>&1"])
        if self.launch_script:
            head_cmd = self.command_for(self.node)
        else:
            clean = re.sub(r"--distributed-executor-backend(=|\s+)\S+", "", self.command)
            head_cmd = (
                f"{clean} --nnodes {total} --node-rank 0 --master-addr {self.local_ip} --master-port {self.master_port}"
            )
        say(f"Executing command on head node (rank 0): {head_cmd}")
        if self.daemon:
            rc, _ = self.docker(None, ["exec", "-d", self.container, "bash", "-c", f"{head_cmd} >> /proc/1/fd/1 2>&1"])
            if rc != 0:
                print(f"Error: failed to start the command inside container '{self.container}'.", file=sys.stderr)
                return 1
            say(f"Command dispatched in background (Daemon mode). Container: {self.container}")
            return 0
        rc, _ = self.docker(None, ["exec", "-i", self.container, "bash", "-c", head_cmd], stdin=sys.stdin)
        return rc

    def check_parallelism(self) -> None:
        if self.solo or not self.peers:
            return
        if self.launch_script:
            with open(self.launch_script, encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = self.command
        text = re.sub(r"(--[a-z-]*)=", r"\1 ", text)
        sizes = {"tp": 1, "pp": 1, "dp": 1}
        found = False
        prev = ""
        for word in text.split():
            key = {
                "-tp": "tp",
                "--tensor-parallel-size": "tp",
                "-pp": "pp",
                "--pipeline-parallel-size": "pp",
                "-dp": "dp",
                "--data-parallel-size": "dp",
            }.get(prev)
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
        if self.launch_script:
            with open(self.launch_script, encoding="utf-8") as fh:
                text += fh.read()
        if self.node.fail_mode() == "fail-launch" or fail_mode_for_text(text) == "fail-launch":
            say(
                f"Error: Failed to prepare cluster launch on head node ({self.local_ip}): the launch was refused "
                f"(simulated failure, sim/fail-launch)."
            )
            raise Exit(1)

    # -- main flow --------------------------------------------------------------------------------
    def run(self) -> int:
        self.parse()
        self.load_config()
        if self.mount_cache_dirs:
            self.add_cache_mounts()
        for mapping in self.volumes:
            self.docker_args += ["-v", *mapping.split()]
        if self.launch_script:
            self.resolve_launch_script()

        if self.solo:
            self.local_ip = self.local_ip or "127.0.0.1"
            self.nodes_arg = self.local_ip
            self.peers = []
            say("Solo mode enabled. Skipping node detection.")
        else:
            self.detect_interfaces()
            self.detect_nodes()
        if not self.nodes_arg:
            say("Error: Nodes argument (-n) is mandatory or could not be auto-detected.")
            self.usage()
        all_nodes = [n.strip() for n in self.nodes_arg.split(",")]
        if self.local_ip not in all_nodes:
            say(f"Error: Local IP ({self.local_ip}) is not in the list of nodes ({self.nodes_arg}).")
            raise Exit(1)
        if not self.solo and not self.peers:
            say("Only local node detected/configured. Activating solo mode (no Ray cluster).")
            self.solo = True
        if self.solo:
            if self.ray_explicit:
                say("Error: --ray is incompatible with --solo or a single-node configuration.")
                raise Exit(1)
            if self.no_ray_explicit:
                say("Error: --no-ray is incompatible with --solo or a single-node configuration.")
                raise Exit(1)
            self.no_ray = False

        say(f"Head Node: {self.local_ip}")
        say(f"Worker Nodes: {' '.join(self.peers)}")
        say(f"Container Name: {self.container}")
        say(f"Image Name: {self.image}")
        say(f"Action: {self.action}")

        if self.action in ("start", "exec") or self.check_config:
            if self.peers:
                say("Checking SSH connectivity to worker nodes...")
                for worker in self.peers:
                    if self.target(worker) is None:
                        say(f"Error: Passwordless SSH to {worker} failed.")
                        say("  Please ensure SSH keys are configured and the host is reachable.")
                        raise Exit(1)
                    say(f"  SSH to {worker}: OK")
        if not self.action and not self.check_config:
            say("Error: No action specified. Use: start | stop | status | exec")
            self.usage()
        if self.check_config:
            say("Configuration Check Complete.")
            say(f"  Image Name: {self.image}")
            say(f"  ETH Interface: {self.eth_if}")
            say(f"  IB Interface: {self.ib_if}")
            say(f"  Docker Args: {' '.join(self.docker_args)}")
            say("  Docker Network: host")
            return 0
        if self.action == "stop":
            self.cleanup()
            return 0
        if self.action == "status":
            self.status()
            return 0

        # Without daemon mode the cluster is stopped when this script exits, whatever the reason.
        exec_daemon = self.daemon and not (self.old and self.action == "exec")
        if not exec_daemon:
            self.cleanup_armed = True
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, _raise_exit)

        if self.action == "exec":
            if (
                not self.solo
                and not self.no_ray
                and not self.launch_script
                and re.search(r"(^|\s)vllm\s+serve(\s|$)", self.command)
                and not re.search(r"--distributed-executor-backend(=|\s|$)", self.command)
            ):
                print("Adding --distributed-executor-backend ray for Ray mode.", file=sys.stderr, flush=True)
                self.command = f"{self.command} --distributed-executor-backend ray"
            self.check_parallelism()
            self.check_fail_launch()
            if not self.start_cluster():
                raise Exit(1)
            say(f"Executing command: {self.command}")
            if self.no_ray and self.peers and (self.launch_script or "vllm serve" in self.command):
                return self.exec_no_ray_cluster()
            return self.exec_on_head(self.command_for(self.node))

        if self.action == "start":
            self.check_fail_launch()
            if not self.start_cluster():
                raise Exit(1)
            if self.daemon:
                say("Cluster started in background (Daemon mode).")
                return 0
            say("Cluster started. Tailing logs from head node...")
            say("Press Ctrl+C to stop the cluster.")
            rc, _ = self.docker(None, ["logs", "-f", self.container])
            return rc
        return 0


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
