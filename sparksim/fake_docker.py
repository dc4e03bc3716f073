"""A fake ``docker`` CLI for one simulated node, with container state under ``<node>/containers/``.

Supported: ``run``, ``ps``, ``logs``, ``stop``, ``start``, ``restart``, ``kill``, ``rm``, ``inspect``, ``exec``,
``cp``, ``top``, ``images``, ``image inspect``, ``version``. A container is a directory ``containers/<name>/`` holding
``state.json``, a FIFO ``stdout`` (what ``/proc/1/fd/1`` means inside the container), the log
``log`` (one ``<unix time> <line>`` per line, so ``--since`` works), ``pgids`` (the process
groups started by ``docker exec``) and ``rootfs/`` (the container's own files).

Container processes run on the host filesystem. What belongs to the container alone lives in
``rootfs/``: the paths ``/workspace``, ``/root`` and ``/tmp`` (outside bind mounts) named in the
arguments of ``run``/``exec`` commands, ``exec -w`` and ``cp`` are rewritten to ``rootfs/...``, so
``docker exec NAME mkdir -p /workspace`` never touches this machine's ``/workspace``. ``cp`` writes
anything outside a bind mount into ``rootfs/``; bind mounts map to their source. Paths under bind
mounts are left for the program to resolve in command arguments (the fake vLLM maps them itself).

Every Spark has the same home directory; in the simulation each node has its own directory, so a bind
source inside another node's directory (``-v $HOME/...`` expanded on the head and sent to a worker
over ssh) means the same path in this node's directory.

Each container has a supervisor process (the "shim", in its own session) that runs the container
command, turns everything written to the FIFO into timestamped log lines and removes the
container when the command exits (``--rm``). Every process of a container carries
``SPARKSIM_CID=<id>`` in its environment, which is how ``docker stop`` finds all of them, including
processes that started their own sessions.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from sparksim.common import CONTAINER_PATH, SIM_KNOBS, Node, eprint, package_parent, parse_docker_time, rfc3339

DEFAULT_IMAGE_ID = "sha256:5f1c0b7e9a3d4c2b8e6f7a1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b"
DAEMON_ERR = "Error response from daemon:"

# docker run / exec options that take a value
RUN_VALUE_OPTS = {
    "-e",
    "--env",
    "-v",
    "--volume",
    "--name",
    "--network",
    "--net",
    "--gpus",
    "--ipc",
    "--shm-size",
    "--ulimit",
    "--entrypoint",
    "-w",
    "--workdir",
    "--env-file",
    "--device",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "--runtime",
    "--restart",
    "-u",
    "--user",
    "-l",
    "--label",
    "-h",
    "--hostname",
    "-p",
    "--publish",
    "-m",
    "--memory",
    "--memory-swap",
    "--pids-limit",
    "--pid",
    "--add-host",
    "--mount",
    "--cpus",
    "--cpuset-cpus",
    "--log-driver",
    "--log-opt",
    "--platform",
    "--pull",
    "--stop-signal",
    "--stop-timeout",
    "--tmpfs",
}
RUN_FLAG_OPTS = {
    "-d",
    "--detach",
    "--rm",
    "-i",
    "--interactive",
    "-t",
    "--tty",
    "-it",
    "-ti",
    "--privileged",
    "--init",
    "-P",
    "--publish-all",
    "--read-only",
    "-q",
    "--quiet",
}
EXEC_VALUE_OPTS = {"-e", "--env", "-w", "--workdir", "-u", "--user", "--detach-keys", "--env-file"}
EXEC_FLAG_OPTS = {"-d", "--detach", "-i", "--interactive", "-t", "--tty", "-it", "-ti", "--privileged"}
VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class DockerError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------------------------------
# container state
# ---------------------------------------------------------------------------------------------
def _cdir(node: Node, name: str) -> str:
    return os.path.join(node.containers_dir, name)


def _load_state(cdir: str) -> dict | None:
    try:
        with open(os.path.join(cdir, "state.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def _save_state(cdir: str, state: dict) -> None:
    path = os.path.join(cdir, "state.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh)
    os.replace(tmp, path)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _shim_alive(state: dict) -> bool:
    pid = state.get("shim_pid")
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"SPARKSIM_CID={state['id']}".encode() in fh.read().split(b"\0")
    except OSError:
        return False


def container_states(node: Node, include_stopped: bool = False) -> list[dict]:
    """The containers of a node; removes leftovers of ``--rm`` containers whose shim is gone."""
    out = []
    try:
        names = sorted(os.listdir(node.containers_dir))
    except FileNotFoundError:
        return out
    for name in names:
        cdir = _cdir(node, name)
        state = _load_state(cdir)
        if state is None:
            continue
        if state.get("status") == "running" and not _shim_alive(state):
            if state.get("rm"):
                shutil.rmtree(cdir, ignore_errors=True)
                continue
            state["status"] = "exited"
        if state.get("status") == "created" and time.time() - state.get("created", 0) > 30:
            shutil.rmtree(cdir, ignore_errors=True)
            continue
        if include_stopped or state.get("status") == "running":
            out.append(state)
    return out


def find_container(node: Node, ref: str, include_stopped: bool = True) -> dict | None:
    for state in container_states(node, include_stopped=include_stopped):
        if ref in (state["name"], "/" + state["name"]) or (len(ref) >= 4 and state["id"].startswith(ref)):
            return state
    return None


def running_names(node: Node) -> list[str]:
    return [s["name"] for s in container_states(node)]


# ---------------------------------------------------------------------------------------------
# process handling
# ---------------------------------------------------------------------------------------------
def _pids_with_env(marker: bytes) -> list[int]:
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def kill_container_processes(state: dict, cdir: str, timeout: float, sig: int = signal.SIGTERM) -> None:
    marker = f"SPARKSIM_CID={state['id']}".encode()
    pids = _pids_with_env(marker)
    groups = {state.get("pgid")}
    try:
        with open(os.path.join(cdir, "pgids"), encoding="utf-8") as fh:
            groups.update(int(x) for x in fh.read().split() if x.strip().isdigit())
    except FileNotFoundError:
        pass
    # Only signal a recorded group if one of the container's processes is still in it (pgid reuse).
    live_groups = {_pgid(p) for p in pids}
    for pgid in groups:
        if pgid and pgid in live_groups:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            break
        time.sleep(0.02)
    for pid in _pids_with_env(marker):
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def stop_container(node: Node, state: dict, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    from sparksim import meminfo

    cdir = _cdir(node, state["name"])
    kill_container_processes(state, cdir, timeout, sig)
    try:
        meminfo.release(node, state["id"])
    except OSError:
        pass
    if state.get("rm"):
        shutil.rmtree(cdir, ignore_errors=True)
    else:
        current = _load_state(cdir)
        if current is not None:
            current["status"] = "exited"
            current["finished_at"] = time.time()
            current["exit_code"] = 143 if sig == signal.SIGTERM else 137
            _save_state(cdir, current)


def stop_all(node: Node, timeout: float = 2.0) -> None:
    for state in container_states(node, include_stopped=True):
        stop_container(node, state, timeout)
        shutil.rmtree(_cdir(node, state["name"]), ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# option parsing helpers
# ---------------------------------------------------------------------------------------------
def _split_opts(args: list[str], value_opts: set[str], flag_opts: set[str], cmd: str):
    """Split ``[options] POSITIONAL rest...`` docker-style. Returns (opts, positional_and_rest)."""
    opts: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return opts, args[i + 1 :]
        if not arg.startswith("-") or arg == "-":
            return opts, args[i:]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            if key not in value_opts and key not in flag_opts:
                raise DockerError(f"unknown flag: {key}\nSee 'docker {cmd} --help'.", 125)
            opts.append((key, value))
        elif arg in flag_opts:
            opts.append((arg, None))
        elif arg in value_opts:
            if i + 1 >= len(args):
                raise DockerError(
                    f"flag needs an argument: '{arg.lstrip('-')}' in {arg}\nSee 'docker {cmd} --help'.", 125
                )
            opts.append((arg, args[i + 1]))
            i += 1
        elif len(arg) > 2 and arg[1] != "-" and arg[:2] in value_opts:
            opts.append((arg[:2], arg[2:]))
        elif len(arg) > 2 and arg[1] != "-" and all(f"-{c}" in flag_opts for c in arg[1:]):
            opts.extend((f"-{c}", None) for c in arg[1:])
        else:
            raise DockerError(f"unknown flag: {arg}\nSee 'docker {cmd} --help'.", 125)
        i += 1
    return opts, []


def _env_from_opts(opts, source_env: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in opts:
        if key in ("-e", "--env"):
            if "=" in value:
                k, v = value.split("=", 1)
                env[k] = v
            elif value in source_env:
                env[value] = source_env[value]
        elif key == "--env-file":
            from sparksim.common import parse_env_file

            env.update(parse_env_file(value))
    return env


def _image_table(node: Node) -> dict[str, str]:
    try:
        with open(os.path.join(node.dir, "images.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return {"vllm-node": DEFAULT_IMAGE_ID}


def _image_id(node: Node, image: str) -> str | None:
    images = _image_table(node)
    if image in images:
        return images[image]
    if image.endswith(":latest") and image[: -len(":latest")] in images:
        return images[image[: -len(":latest")]]
    return None


_ADJ = ("admiring", "brave", "clever", "eager", "focused", "happy", "jolly", "nifty", "quirky", "zen")
_NOUN = ("turing", "hopper", "lovelace", "knuth", "ritchie", "curie", "noether", "shannon", "dijkstra", "liskov")


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
def _start_shim(node: Node, name: str, env: dict[str, str], *, error_code: int) -> None:
    """Spawn the container's supervisor and wait until it runs the command (status ``running``)."""
    cdir = _cdir(node, name)
    subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); from sparksim.fake_docker import shim_main; "
            "shim_main(sys.argv[2], sys.argv[3])",
            package_parent(),
            node.dir,
            name,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        close_fds=True,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        current = _load_state(cdir)
        if current is None:
            raise DockerError(f"docker: {DAEMON_ERR} container {name} exited during start", error_code)
        if current.get("status") == "running":
            break
        if current.get("status") == "failed":
            if error_code == 125:
                shutil.rmtree(cdir, ignore_errors=True)
            raise DockerError(current.get("error", f"docker: {DAEMON_ERR} failed to start container"), 127)
        time.sleep(0.005)
    else:
        raise DockerError(f"docker: {DAEMON_ERR} timed out starting container {name}", error_code)
    try:
        from sparksim import meminfo

        meminfo.set_usage(node, current["id"], 0.5)
    except OSError:
        pass


def cmd_run(node: Node, args: list[str]) -> int:
    opts, rest = _split_opts(args, RUN_VALUE_OPTS, RUN_FLAG_OPTS, "run")
    if not rest:
        raise DockerError("\"docker run\" requires at least 1 argument.\nSee 'docker run --help'.", 1)
    image, command = rest[0], rest[1:]
    flags = {k for k, _ in opts}
    detach = bool(flags & {"-d", "--detach"})
    name = None
    entrypoint = None
    workdir = None
    network = "default"
    mounts = []
    for key, value in opts:
        if key == "--name":
            name = value
        elif key == "--entrypoint":
            entrypoint = value
        elif key in ("-w", "--workdir"):
            workdir = value
        elif key in ("--network", "--net"):
            network = value
        elif key in ("-v", "--volume"):
            mounts.append(_same_home(node, _parse_volume(value)))
    if name is not None and not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
        raise DockerError(
            f"docker: {DAEMON_ERR} Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
            f"are allowed.\nSee 'docker run --help'.",
            125,
        )
    image_id = _image_id(node, image)
    if image_id is None:
        ref = image if ":" in image else f"{image}:latest"
        raise DockerError(
            f"Unable to find image '{ref}' locally\ndocker: {DAEMON_ERR} pull access denied for "
            f"{image.split(':')[0]}, repository does not exist or may require 'docker login': denied: "
            f"requested access to the resource is denied.\nSee 'docker run --help'.",
            125,
        )
    for mount in mounts:
        if mount["Type"] == "bind" and not os.path.exists(mount["Source"]):
            raise DockerError(
                f'docker: {DAEMON_ERR} invalid mount config for type "bind": bind source path does '
                f"not exist: {mount['Source']}\nSee 'docker run --help'.",
                125,
            )
    if entrypoint:
        command = [entrypoint, *command]
    if not command:
        command = ["/bin/bash"]

    cid = secrets.token_hex(32)
    if name is None:
        name = f"{secrets.choice(_ADJ)}_{secrets.choice(_NOUN)}"
    os.makedirs(node.containers_dir, exist_ok=True)
    cdir = _cdir(node, name)
    for _attempt in range(2):
        try:
            os.mkdir(cdir)
            break
        except FileExistsError:
            existing = _load_state(cdir)
            # A name stays taken while its container is created or running, and after it exits unless --rm.
            in_use = existing is not None and (
                existing.get("status") == "created"
                or _shim_alive(existing)
                or (not existing.get("rm") and existing.get("status") == "exited")
            )
            if in_use:
                raise DockerError(
                    f'docker: {DAEMON_ERR} Conflict. The container name "/{name}" is already in use by container '
                    f'"{existing["id"]}". You have to remove (or rename) that container to be able to reuse that '
                    f"name.\nSee 'docker run --help'.",
                    125,
                ) from None
            shutil.rmtree(cdir, ignore_errors=True)
    else:
        raise DockerError(f"docker: {DAEMON_ERR} could not create container {name}", 125)

    container_root = os.path.join(cdir, "rootfs")
    os.makedirs(os.path.join(container_root, "root"), exist_ok=True)
    os.makedirs(os.path.join(container_root, "tmp"), exist_ok=True)
    # The launcher's own image (`vllm-node`, built by its Dockerfile) works in /workspace/vllm; others (e.g. an
    # upstream vllm-openai image) may declare /workspace without creating it.
    own_image = image.split(":")[0].split("/")[-1].startswith("vllm-node")
    if own_image:
        _image_files(container_root)
    if workdir is None:
        workdir = IMAGE_WORKDIR if own_image else "/"
    env = {"PATH": f"{node.bin}:{CONTAINER_PATH}", "HOSTNAME": cid[:12], "HOME": os.path.join(container_root, "root")}
    for knob in SIM_KNOBS:
        if os.environ.get(knob):
            env[knob] = os.environ[knob]
    env.update(_env_from_opts(opts, dict(os.environ)))
    env.update(
        {
            "SPARKSIM_ROOT": node.root,
            "SPARKSIM_NODE": node.name,
            "SPARKSIM_NODE_DIR": node.dir,
            "SPARKSIM_IP": node.ip,
            "SPARKSIM_MEMINFO": node.meminfo,
            "SPARKSIM_CONTAINER": name,
            "SPARKSIM_CID": cid,
        }
    )
    now = time.time()
    command = [rewrite_private_paths(node, {"name": name, "mounts": mounts}, a) for a in command]
    mounts = _with_identity_mounts(mounts)
    state = {
        "id": cid,
        "name": name,
        "image": image,
        "image_id": image_id,
        "command": command,
        "env": env,
        "mounts": mounts,
        "network": network,
        "rm": "--rm" in flags,
        "workdir": workdir,
        "created": now,
        "started_at": None,
        "status": "created",
        "pgid": None,
        "shim_pid": None,
    }
    _save_state(cdir, state)
    os.mkfifo(os.path.join(cdir, "stdout"), 0o666)
    open(os.path.join(cdir, "log"), "a").close()
    open(os.path.join(cdir, "pgids"), "a").close()
    _start_shim(node, name, env, error_code=125)
    if detach:
        print(cid, flush=True)
        return 0
    return _follow(node, name, since=None, follow=True, timestamps=False, tail=None)


def _same_home(node: Node, mount: dict) -> dict:
    """A bind source in another node's directory names the same path in this node's (same $HOME)."""
    nodes_dir = os.path.join(node.root, "nodes") + os.sep
    source = mount.get("Source") or ""
    if mount.get("Type") == "bind" and source.startswith(nodes_dir):
        other, _, rest = source[len(nodes_dir) :].partition(os.sep)
        if other != node.name:
            mount = dict(mount, Source=os.path.join(node.dir, rest) if rest else node.dir)
    return mount


PRIVATE_DIRS = ("/workspace", "/root", "/tmp")
_PATH_RE = re.compile(r"(?<![\w.~/:-])(/[^\s\"';|&<>()`$=]*)")


def _rootfs(node: Node, state: dict) -> str:
    return os.path.join(_cdir(node, state["name"]), "rootfs")


def _bind_for(state: dict, path: str) -> tuple[str, str] | None:
    best = None
    for mount in state.get("mounts", []):
        if mount.get("Type") != "bind" or mount.get("SimIdentity"):
            continue
        dest = os.path.normpath(mount["Destination"])
        if (path == dest or path.startswith(dest.rstrip("/") + "/")) and (best is None or len(dest) > len(best[0])):
            best = (dest, mount["Source"])
    return best


def _is_private(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PRIVATE_DIRS)


def host_path(node: Node, state: dict, path: str, write: bool = False) -> str:
    """Where a path seen inside the container lives on this machine.

    Bind mounts map to their source; ``/workspace``, ``/root`` and ``/tmp`` to ``rootfs/``; anything
    else is the image (this machine's files) for reading and ``rootfs/`` for writing (``write=True``).
    """
    trailing = path.endswith("/") and path != "/"
    norm = os.path.normpath(path if path.startswith("/") else "/" + path)
    norm = "/" + norm.lstrip("/")
    bind = _bind_for(state, norm)
    if bind is not None:
        out = os.path.normpath(bind[1] + norm[len(bind[0]) :])
    else:
        inside = os.path.join(_rootfs(node, state), norm.lstrip("/"))
        if _is_private(norm) or write or os.path.lexists(inside):
            out = inside
        else:
            out = norm
    return out + "/" if trailing else out


def rewrite_private_paths(node: Node, state: dict, text: str) -> str:
    """Rewrite container paths in a command's text to where they are on this machine.

    Under a bind mount: the mount's source; ``/workspace``, ``/root``, ``/tmp``: the container's rootfs;
    anything else (the image's files) is left as it is.
    """

    def sub(match: re.Match) -> str:
        path = match.group(1)
        norm = os.path.normpath(path)
        if norm.startswith("//"):
            return path
        slash = "/" if path.endswith("/") and norm != "/" else ""
        bind = _bind_for(state, norm)
        if bind is not None:
            return os.path.normpath(bind[1] + norm[len(bind[0]) :]) + slash
        if _is_private(norm):
            return os.path.join(_rootfs(node, state), path.lstrip("/"))
        return path

    return _PATH_RE.sub(sub, text)


def _visible_mounts(state: dict) -> list[dict]:
    return [m for m in state.get("mounts", []) if not m.get("SimIdentity")]


def _with_identity_mounts(mounts: list[dict]) -> list[dict]:
    """Bind mounts plus, hidden from inspect, each source mounted at its own path.

    Command paths under a bind mount are rewritten to the source on this machine; a program that maps
    container paths through the mounts itself (the fake vLLM) then still finds them.
    """
    extra = []
    for mount in mounts:
        if mount.get("Type") == "bind" and mount["Source"] != os.path.normpath(mount["Destination"]):
            extra.append(dict(mount, Destination=mount["Source"], SimIdentity=True))
    return mounts + extra


def _parse_volume(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) < 2:
        # anonymous volume: "-v /container/path"
        return {
            "Type": "volume",
            "Name": secrets.token_hex(32),
            "Source": "",
            "Destination": spec,
            "Mode": "",
            "RW": True,
        }
    source, dest = parts[0], parts[1]
    mode = parts[2] if len(parts) > 2 else ""
    if not dest.startswith("/"):
        raise DockerError(
            f"docker: {DAEMON_ERR} invalid volume specification: '{spec}': invalid mount config for "
            f"type \"bind\": invalid mount path: '{dest}' mount path must be absolute.\n"
            f"See 'docker run --help'.",
            125,
        )
    rw = "ro" not in mode.split(",")
    if source.startswith("/"):
        return {"Type": "bind", "Source": source, "Destination": dest, "Mode": mode, "RW": rw}
    if not VOLUME_NAME_RE.match(source):
        raise DockerError(
            f'docker: {DAEMON_ERR} create {source}: "{source}" includes invalid characters for a local '
            f'volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            f"directory, use absolute path.\nSee 'docker run --help'.",
            125,
        )
    return {"Type": "volume", "Name": source, "Source": "", "Destination": dest, "Mode": mode, "RW": rw}


# The image's working directory and the script it carries there: launchers before 2026-03-13 start multi-node
# containers with `./run-cluster-node.sh --role head|node ...`, which joins the node to a Ray cluster.
IMAGE_WORKDIR = "/workspace/vllm"
RUN_CLUSTER_NODE = """#!/bin/bash
# run-cluster-node.sh of the simulated vllm-node image: note the node's addresses, then join (or head) a Ray cluster.
set -e
role="" host_ip="" eth_if="" ib_if="" head_ip=""
while [ $# -gt 0 ]; do
  case "$1" in
    -r|--role) role=$2; shift ;;
    -h|--host-ip) host_ip=$2; shift ;;
    -e|--eth-if) eth_if=$2; shift ;;
    -i|--ib-if) ib_if=$2; shift ;;
    -m|--head-ip) head_ip=$2; shift ;;
    *) echo "Unknown parameter passed: $1"; exit 1 ;;
  esac
  shift
done
if [ -z "$role" ] || [ -z "$host_ip" ] || [ -z "$eth_if" ] || [ -z "$ib_if" ]; then
  echo "Error: Missing required arguments."; exit 1
fi
if [ "$role" = node ] && [ -z "$head_ip" ]; then echo "Error: a node needs --head-ip."; exit 1; fi
echo "Configuring environment for [$role] at $host_ip..."
printf 'export VLLM_HOST_IP="%s"\nexport NCCL_SOCKET_IFNAME="%s"\nexport NCCL_IB_HCA="%s"\n' \
  "$host_ip" "$eth_if" "$ib_if" >> ~/.bashrc
if [ "$role" = head ]; then exec ray start --block --head --port 6379 --node-ip-address "$host_ip"; fi
exec ray start --block --address="$head_ip:6379" --node-ip-address "$host_ip"
"""


def _image_files(container_root: str) -> None:
    """What the image carries in its working directory."""
    workdir = os.path.join(container_root, IMAGE_WORKDIR.lstrip("/"))
    os.makedirs(workdir, exist_ok=True)
    script = os.path.join(workdir, "run-cluster-node.sh")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(RUN_CLUSTER_NODE)
    os.chmod(script, 0o755)


def shim_main(node_dir: str, name: str) -> None:
    """Supervisor of one container: runs its command and timestamps its output into the log."""
    import select

    node = Node(node_dir)
    cdir = _cdir(node, name)
    state = _load_state(cdir)
    if state is None:
        return
    fifo = os.path.join(cdir, "stdout")
    # O_RDWR keeps a writer open on our side, so the FIFO never reports EOF between writers.
    fd = os.open(fifo, os.O_RDWR)
    log_fd = os.open(os.path.join(cdir, "log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    workdir = state.get("workdir") or "/"
    cwd = "/" if os.path.normpath(workdir) == "/" else host_path(node, state, workdir)
    try:
        proc = subprocess.Popen(
            state["command"],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            env=state["env"],
            cwd=cwd if os.path.isdir(cwd) else "/",
            close_fds=True,
        )
    except OSError as exc:
        cmd0 = state["command"][0]
        state["status"] = "failed"
        state["error"] = (
            f"docker: {DAEMON_ERR} failed to create task for container: failed to create shim task: "
            f"OCI runtime create failed: runc create failed: unable to start container process: "
            f'exec: "{cmd0}": executable file not found in $PATH: unknown ({exc.strerror}).'
        )
        _save_state(cdir, state)
        return
    state.update(status="running", started_at=time.time(), shim_pid=os.getpid(), pgid=os.getpgid(0), pid=proc.pid)
    _save_state(cdir, state)

    buf = b""
    exited_at = None
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            data = os.read(fd, 65536)
            now = time.time()
            buf += data
            if b"\n" in buf:
                *lines, buf = buf.split(b"\n")
                os.write(log_fd, b"".join(b"%.6f " % now + line + b"\n" for line in lines))
            continue
        if exited_at is None and proc.poll() is not None:
            exited_at = time.time()
            continue
        if exited_at is not None:
            break
    if buf:
        os.write(log_fd, b"%.6f " % time.time() + buf + b"\n")
    # PID 1 exited: the container stops and every exec'd process dies with it.
    current = _load_state(cdir) or state
    current.update(status="exited", finished_at=time.time(), exit_code=proc.returncode)
    if os.path.isdir(cdir):
        _save_state(cdir, current)
    try:
        from sparksim import meminfo

        meminfo.release(node, state["id"])
    except OSError:
        pass
    marker = f"SPARKSIM_CID={state['id']}".encode()
    for pid in _pids_with_env(marker):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    if state.get("rm"):
        shutil.rmtree(cdir, ignore_errors=True)


def cmd_exec(node: Node, args: list[str]) -> int:
    opts, rest = _split_opts(args, EXEC_VALUE_OPTS, EXEC_FLAG_OPTS, "exec")
    if len(rest) < 2:
        raise DockerError("\"docker exec\" requires at least 2 arguments.\nSee 'docker exec --help'.", 1)
    ref, command = rest[0], rest[1:]
    state = find_container(node, ref)
    if state is None:
        raise DockerError(f"{DAEMON_ERR} No such container: {ref}", 1)
    if state.get("status") != "running":
        raise DockerError(f"{DAEMON_ERR} container {state['id']} is not running", 1)
    flags = {k for k, _ in opts}
    detach = bool(flags & {"-d", "--detach"})
    cdir = _cdir(node, state["name"])
    fifo = os.path.join(cdir, "stdout")
    command = [
        rewrite_private_paths(node, state, a).replace("/proc/1/fd/1", fifo).replace("/proc/1/fd/2", fifo)
        for a in command
    ]
    env = dict(state["env"])
    env.update(_env_from_opts(opts, dict(os.environ)))
    workdir = state.get("workdir") or "/"
    for key, value in opts:
        if key in ("-w", "--workdir"):
            workdir = value
    cwd = "/" if os.path.normpath(workdir) == "/" else host_path(node, state, workdir)
    if not os.path.isdir(cwd):
        raise DockerError(
            "OCI runtime exec failed: exec failed: unable to start container process: chdir to cwd "
            f'("{workdir}") set in config.json failed: no such file or directory: unknown',
            126,
        )
    workdir = cwd
    try:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=workdir,
            start_new_session=True,
            close_fds=True,
            stdin=subprocess.DEVNULL if detach else None,
            stdout=subprocess.DEVNULL if detach else None,
            stderr=subprocess.DEVNULL if detach else None,
        )
    except OSError:
        raise DockerError(
            f"OCI runtime exec failed: exec failed: unable to start container process: exec: "
            f'"{command[0]}": executable file not found in $PATH: unknown',
            127,
        ) from None
    fd = os.open(os.path.join(cdir, "pgids"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{proc.pid}\n".encode())
    finally:
        os.close(fd)
    if detach:
        return 0
    rc = proc.wait()
    return rc if rc >= 0 else 128 - rc


def cmd_stop(node: Node, args: list[str], sig: int = signal.SIGTERM, verb: str = "stop") -> int:
    opts, names = _split_opts(args, {"-t", "--time", "-s", "--signal"}, set(), verb)
    timeout = 10.0
    for key, value in opts:
        if key in ("-t", "--time"):
            timeout = float(value)
    if not names:
        raise DockerError(f"\"docker {verb}\" requires at least 1 argument.\nSee 'docker {verb} --help'.", 1)
    # The fake processes exit on SIGTERM at once; cap the grace period so tests stay fast.
    timeout = min(timeout, 3.0)

    def stop(ref: str, state: dict) -> bool:
        if state.get("status") == "running":
            stop_container(node, state, timeout, sig)
        elif verb == "kill":
            eprint(f"{DAEMON_ERR} cannot kill container: {ref}: container {state['id']} is not running")
            return False
        return True

    return _each_container(node, names, stop)


def _start_stopped(node: Node, state: dict) -> None:
    """Run a stopped container's command again (same id, name, log and files), as ``docker start`` does."""
    cdir = _cdir(node, state["name"])
    # Not "created": a container stuck in that state is cleaned up; this one keeps its creation time.
    state.update(status="restarting", shim_pid=None, pgid=None, started_at=None)
    state.pop("exit_code", None)
    state.pop("finished_at", None)
    _save_state(cdir, state)
    with open(os.path.join(cdir, "pgids"), "w"):
        pass
    _start_shim(node, state["name"], state["env"], error_code=1)


def cmd_start(node: Node, args: list[str]) -> int:
    """``docker start NAME...``: a running container is left as it is; each name is printed once started."""
    _opts, names = _split_opts(args, set(), {"-a", "--attach", "-i", "--interactive"}, "start")
    if not names:
        raise DockerError("\"docker start\" requires at least 1 argument.\nSee 'docker start --help'.", 1)
    rc = 0
    for ref in names:
        state = find_container(node, ref)
        if state is None:
            eprint(f"{DAEMON_ERR} No such container: {ref}")
            rc = 1
            continue
        if state.get("status") != "running":
            try:
                _start_stopped(node, state)
            except DockerError as exc:
                eprint(exc.message)
                rc = 1
                continue
        print(ref, flush=True)
    if rc:
        eprint("Error: failed to start containers: " + ", ".join(names))
    return rc


def cmd_restart(node: Node, args: list[str]) -> int:
    """``docker restart [-t SECONDS] NAME...``: stop (SIGTERM, then SIGKILL after the grace period), then start.

    Unlike ``stop``, a restart never removes an ``--rm`` container: docker does not auto-remove on a restart.
    """
    opts, names = _split_opts(args, {"-t", "--time", "-s", "--signal"}, set(), "restart")
    timeout = 10.0
    for key, value in opts:
        if key in ("-t", "--time"):
            timeout = float(value)
    if not names:
        raise DockerError("\"docker restart\" requires at least 1 argument.\nSee 'docker restart --help'.", 1)
    timeout = min(timeout, 3.0)
    rc = 0
    for ref in names:
        state = find_container(node, ref)
        if state is None:
            eprint(f"{DAEMON_ERR} No such container: {ref}")
            rc = 1
            continue
        cdir = _cdir(node, state["name"])
        if state.get("status") == "running":
            kill_container_processes(state, cdir, timeout)
            current = _load_state(cdir) or state
            current.update(status="exited", finished_at=time.time(), exit_code=143)
            _save_state(cdir, current)
            state = current
        try:
            _start_stopped(node, state)
        except DockerError as exc:
            eprint(f"{DAEMON_ERR} Cannot restart container {ref}: {exc.message}")
            rc = 1
            continue
        print(ref, flush=True)
    return rc


def cmd_rm(node: Node, args: list[str]) -> int:
    opts, names = _split_opts(args, set(), {"-f", "--force", "-v", "--volumes"}, "rm")
    force = any(k in ("-f", "--force") for k, _ in opts)

    def remove(ref: str, state: dict) -> bool:
        if state.get("status") == "running":
            if not force:
                eprint(
                    f'{DAEMON_ERR} cannot remove container "/{state["name"]}": container is running: stop the '
                    f"container before removing or force remove"
                )
                return False
            stop_container(node, state, 0.5, signal.SIGKILL)
        shutil.rmtree(_cdir(node, state["name"]), ignore_errors=True)
        return True

    return _each_container(node, names, remove)


def _each_container(node: Node, names: list[str], act: Callable[[str, dict], bool]) -> int:
    """docker's loop of a verb over named containers: each one acted on is echoed; a missing or refused one
    (`act` printed why and returned False) makes the exit status 1, and the loop goes on."""
    rc = 0
    for ref in names:
        state = find_container(node, ref)
        if state is None:
            eprint(f"{DAEMON_ERR} No such container: {ref}")
            rc = 1
        elif act(ref, state):
            print(ref, flush=True)
        else:
            rc = 1
    return rc


def _human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = seconds // 60
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = minutes // 60
    return "About an hour" if hours == 1 else f"{hours} hours"


def _ps_row(state: dict) -> dict:
    now = time.time()
    command = " ".join(state["command"])
    if len(command) > 20:
        command = command[:19] + "…"
    running = state.get("status") == "running"
    status = (
        f"Up {_human_duration(now - (state.get('started_at') or now))}"
        if running
        else f"Exited ({state.get('exit_code', 0)}) {_human_duration(now - state.get('finished_at', now))} ago"
    )
    return {
        "ID": state["id"][:12],
        "Image": state["image"],
        "Command": f'"{command}"',
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(state["created"])),
        "RunningFor": f"{_human_duration(now - state['created'])} ago",
        "Ports": "",
        "State": state.get("status"),
        "Status": status,
        "Names": state["name"],
        "Labels": "",
        "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in _visible_mounts(state)),
        "Networks": state.get("network", "default"),
        "Size": "0B",
    }


_TEMPLATE_RE = re.compile(r"\{\{\s*(json\s+)?\.([\w.]*)\s*\}\}")


def render_template(template: str, data) -> str:
    template = template.replace("\\t", "\t").replace("\\n", "\n")

    def lookup(match: re.Match) -> str:
        value = data
        for part in [p for p in match.group(2).split(".") if p]:
            value = value.get(part, "") if isinstance(value, dict) else ""
        if match.group(1):
            return json.dumps(value, separators=(",", ":"))
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return "map[]" if not value else json.dumps(value)
        if value is None:
            return "<nil>"
        return str(value)

    return _TEMPLATE_RE.sub(lookup, template)


def cmd_ps(node: Node, args: list[str]) -> int:
    opts, rest = _split_opts(
        args,
        {"-f", "--filter", "--format", "-n", "--last"},
        {"-a", "--all", "-q", "--quiet", "--no-trunc", "-l", "--latest", "-s", "--size"},
        "ps",
    )
    if rest:
        raise DockerError("\"docker ps\" accepts no arguments.\nSee 'docker ps --help'.", 1)
    flags = {k for k, _ in opts}
    show_all = bool(flags & {"-a", "--all"})
    states = container_states(node, include_stopped=show_all)
    fmt = None
    for key, value in opts:
        if key in ("-f", "--filter"):
            fkey, _, fval = value.partition("=")
            if fkey == "name":
                states = [s for s in states if re.search(fval, s["name"])]
            elif fkey == "id":
                states = [s for s in states if s["id"].startswith(fval)]
            elif fkey == "status":
                states = [s for s in states if s.get("status") == fval]
            elif fkey == "ancestor":
                states = [s for s in states if s["image"] == fval]
            elif fkey not in ("label", "network", "volume", "health", "exited"):
                raise DockerError(f"{DAEMON_ERR} invalid filter '{fkey}'", 1)
        elif key == "--format":
            fmt = value
    rows = [_ps_row(s) for s in states]
    if flags & {"-q", "--quiet"}:
        for row in rows:
            print(row["ID"])
        return 0
    if fmt and not fmt.startswith("table"):
        for row in rows:
            print(render_template(fmt, row))
        return 0
    columns = [
        ("CONTAINER ID", "ID"),
        ("IMAGE", "Image"),
        ("COMMAND", "Command"),
        ("CREATED", "RunningFor"),
        ("STATUS", "Status"),
        ("PORTS", "Ports"),
        ("NAMES", "Names"),
    ]
    table = [[c[0] for c in columns]] + [[r[c[1]] for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
    return 0


def inspect_data(node: Node, state: dict) -> dict:
    running = state.get("status") == "running"
    started = state.get("started_at")
    finished = state.get("finished_at")
    return {
        "Id": state["id"],
        "Created": rfc3339(state["created"]),
        "Path": state["command"][0],
        "Args": state["command"][1:],
        "State": {
            "Status": state.get("status"),
            "Running": running,
            "Paused": False,
            "Restarting": False,
            "OOMKilled": False,
            "Dead": False,
            "Pid": state.get("pid") if running else 0,
            "ExitCode": state.get("exit_code", 0),
            "Error": "",
            "StartedAt": rfc3339(started) if started else "0001-01-01T00:00:00Z",
            "FinishedAt": rfc3339(finished) if finished else "0001-01-01T00:00:00Z",
        },
        "Image": state.get("image_id", ""),
        "Name": "/" + state["name"],
        "RestartCount": 0,
        "HostConfig": {"NetworkMode": state.get("network", "default"), "AutoRemove": bool(state.get("rm"))},
        "Mounts": [
            {k: v for k, v in m.items()} | {"Propagation": "rprivate" if m["Type"] == "bind" else ""}
            for m in _visible_mounts(state)
        ],
        "Config": {
            "Hostname": state["id"][:12],
            "Image": state["image"],
            "Env": [f"{k}={v}" for k, v in state["env"].items() if not k.startswith("SPARKSIM_")],
            "Cmd": state["command"],
            "WorkingDir": state.get("workdir", "/"),
        },
        "NetworkSettings": {"Networks": {state.get("network", "default"): {}}},
    }


def cmd_inspect(node: Node, args: list[str]) -> int:
    opts, refs = _split_opts(args, {"-f", "--format", "--type"}, {"-s", "--size"}, "inspect")
    fmt = next((v for k, v in opts if k in ("-f", "--format")), None)
    kind = next((v for k, v in opts if k == "--type"), None)
    if not refs:
        raise DockerError("\"docker inspect\" requires at least 1 argument.\nSee 'docker inspect --help'.", 1)
    found = []
    missing = []
    for ref in refs:
        state = find_container(node, ref) if kind in (None, "container") else None
        if state is not None:
            found.append(inspect_data(node, state))
            continue
        image_id = _image_id(node, ref) if kind in (None, "image") else None
        if image_id is not None:
            found.append(_image_data(ref, image_id))
            continue
        missing.append(ref)
    if fmt:
        for data in found:
            print(render_template(fmt, data))
    else:
        print(json.dumps(found, indent=4))
    for ref in missing:
        eprint(f"Error: No such object: {ref}")
    return 1 if missing else 0


def _image_data(ref: str, image_id: str) -> dict:
    name = ref if ":" in ref else f"{ref}:latest"
    return {
        "Id": image_id,
        "RepoTags": [name],
        "Created": "2026-09-01T00:00:00Z",
        "Size": 21_474_836_480,
        "Architecture": "arm64",
        "Os": "linux",
    }


def cmd_image(node: Node, args: list[str]) -> int:
    if not args:
        raise DockerError("Usage:  docker image COMMAND", 1)
    sub, rest = args[0], args[1:]
    if sub == "inspect":
        opts, refs = _split_opts(rest, {"-f", "--format"}, set(), "image inspect")
        fmt = next((v for k, v in opts if k in ("-f", "--format")), None)
        rc = 0
        found = []
        for ref in refs:
            image_id = _image_id(node, ref)
            if image_id is None:
                eprint(f"Error response from daemon: No such image: {ref}")
                rc = 1
                continue
            found.append(_image_data(ref, image_id))
        if fmt:
            for data in found:
                print(render_template(fmt, data))
        elif found or rc == 0:
            print(json.dumps(found, indent=4))
        return rc
    if sub in ("ls", "list"):
        return cmd_images(node, rest)
    raise DockerError(f"docker: 'image {sub}' is not a docker command.", 1)


def cmd_images(node: Node, args: list[str]) -> int:
    print(f"{'REPOSITORY':<20} {'TAG':<10} {'IMAGE ID':<14} {'CREATED':<14} SIZE")
    for name, image_id in sorted(_image_table(node).items()):
        repo, _, tag = name.partition(":")
        print(f"{repo:<20} {tag or 'latest':<10} {image_id.split(':')[-1][:12]:<14} {'3 weeks ago':<14} 20GB")
    return 0


def _read_log_lines(fh, partial: bytes) -> tuple[list[tuple[float, bytes]], bytes]:
    data = partial + fh.read()
    if not data:
        return [], b""
    *lines, rest = data.split(b"\n")
    out = []
    for line in lines:
        stamp, _, text = line.partition(b" ")
        try:
            out.append((float(stamp), text))
        except ValueError:
            continue
    return out, rest


def _follow(
    node: Node,
    ref: str,
    since: float | None,
    follow: bool,
    timestamps: bool,
    tail: int | None,
    until: float | None = None,
) -> int:
    import select

    state = find_container(node, ref)
    if state is None:
        raise DockerError(f"{DAEMON_ERR} No such container: {ref}", 1)
    cdir = _cdir(node, state["name"])
    try:
        fh = open(os.path.join(cdir, "log"), "rb")
    except FileNotFoundError:
        raise DockerError(f"{DAEMON_ERR} No such container: {ref}", 1) from None
    out = sys.stdout.buffer
    # The log keeps this machine's times; the node's daemon shows and compares them on the node's clock.
    offset = node.clock_offset()
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLERR | select.POLLHUP)

    def emit(entries) -> bool:
        chunks = []
        for stamp, text in entries:
            if since is not None and stamp + offset < since:
                continue
            if until is not None and stamp + offset > until:
                continue
            chunks.append((rfc3339(stamp + offset).encode() + b" " if timestamps else b"") + text + b"\n")
        if chunks:
            out.write(b"".join(chunks))
            out.flush()
        return True

    with fh:
        entries, partial = _read_log_lines(fh, b"")
        if tail is not None:
            entries = entries[-tail:] if tail > 0 else []
        emit(entries)
        if not follow:
            return 0
        while True:
            entries, partial = _read_log_lines(fh, partial)
            if entries:
                emit(entries)
                continue
            current = _load_state(cdir)
            if (
                current is None
                or current.get("id") != state["id"]
                or current.get("status") != "running"
                or not _shim_alive(current)
            ):
                entries, partial = _read_log_lines(fh, partial)
                emit(entries)
                return 0
            if poller.poll(0):
                return 0
            time.sleep(0.05)


def cmd_logs(node: Node, args: list[str]) -> int:
    opts, rest = _split_opts(
        args, {"--since", "--until", "-n", "--tail"}, {"-f", "--follow", "-t", "--timestamps", "--details"}, "logs"
    )
    if len(rest) != 1:
        raise DockerError("\"docker logs\" requires exactly 1 argument.\nSee 'docker logs --help'.", 1)
    flags = {k for k, _ in opts}
    since = until = None
    tail = None
    now = time.time() + node.clock_offset()
    for key, value in opts:
        try:
            if key == "--since":
                since = parse_docker_time(value, now=now)
            elif key == "--until":
                until = parse_docker_time(value, now=now)
        except ValueError as exc:
            raise DockerError(str(exc), 1) from None
        if key in ("-n", "--tail") and value != "all":
            tail = int(value)
    return _follow(
        node, rest[0], since, bool(flags & {"-f", "--follow"}), bool(flags & {"-t", "--timestamps"}), tail, until
    )


def cmd_version(node: Node, args: list[str]) -> int:
    if args and args[0] in ("--format", "-f"):
        print(render_template(args[1], {"Server": {"Version": "28.3.3"}, "Client": {"Version": "28.3.3"}}))
        return 0
    print(
        "Client: Docker Engine - Community\n Version:           28.3.3\n API version:       1.51\n\n"
        "Server: Docker Engine - Community\n Engine:\n  Version:          28.3.3\n  API version:      1.51"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# cp
# ---------------------------------------------------------------------------------------------
def _container_ref(arg: str) -> tuple[str, str] | None:
    """``NAME:PATH`` -> (NAME, PATH); a local path (absolute, relative with a slash first, or ``-``) -> None."""
    if arg.startswith(("/", ".")) or arg == "-":
        return None
    name, colon, path = arg.partition(":")
    if not colon or "/" in name:
        return None
    return name, path


def _copy_into(src: str, dest: str, missing_parent_error: str) -> None:
    """docker cp's rules for SRC -> DEST once both are paths on this machine."""
    copy_contents = src.endswith("/.")
    src_clean = src[:-2] if copy_contents else src.rstrip("/") or "/"
    dest_is_dir_hint = dest.endswith("/")
    dest = dest.rstrip("/") or "/"
    if os.path.isdir(src_clean):
        if os.path.isdir(dest):
            target = dest if copy_contents else os.path.join(dest, os.path.basename(src_clean))
        elif os.path.exists(dest):
            raise DockerError("cannot copy a directory to a file", 1)
        else:
            if not os.path.isdir(os.path.dirname(dest)):
                raise DockerError(missing_parent_error, 1)
            target = dest
        shutil.copytree(src_clean, target, symlinks=True, dirs_exist_ok=True)
        return
    if os.path.isdir(dest):
        target = os.path.join(dest, os.path.basename(src_clean))
    elif dest_is_dir_hint:
        raise DockerError(missing_parent_error, 1)
    else:
        if not os.path.isdir(os.path.dirname(dest)):
            raise DockerError(missing_parent_error, 1)
        target = dest
    shutil.copy2(src_clean, target)


def cmd_cp(node: Node, args: list[str]) -> int:
    opts, rest = _split_opts(args, set(), {"-a", "--archive", "-L", "--follow-link", "-q", "--quiet"}, "cp")
    if len(rest) != 2:
        raise DockerError(
            "\"docker cp\" requires exactly 2 arguments.\nSee 'docker cp --help'.\n\n"
            "Usage:  docker cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n"
            "\tdocker cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH\n\n"
            "Copy files/folders between a container and the local filesystem",
            1,
        )
    src_arg, dest_arg = rest
    src_ref, dest_ref = _container_ref(src_arg), _container_ref(dest_arg)
    if src_ref and dest_ref:
        raise DockerError("copying between containers is not supported", 1)
    if not src_ref and not dest_ref:
        raise DockerError("must specify at least one container source", 1)
    ref = src_ref or dest_ref
    state = find_container(node, ref[0])
    if state is None:
        raise DockerError(f"{DAEMON_ERR} No such container: {ref[0]}", 1)
    if not ref[1]:
        raise DockerError(f"{DAEMON_ERR} Could not find the file  in container {ref[0]}", 1)
    if dest_ref:
        local = os.path.abspath(src_arg) + ("/." if src_arg.endswith("/.") else "")
        if not os.path.lexists(local.removesuffix("/.")):
            raise DockerError(f"lstat {local.removesuffix('/.')}: no such file or directory", 1)
        dest = host_path(node, state, dest_ref[1] if dest_ref[1].startswith("/") else "/" + dest_ref[1], write=True)
        parent = os.path.dirname(os.path.normpath(dest_ref[1]))
        _copy_into(local, dest, f"{DAEMON_ERR} Could not find the file {parent} in container {dest_ref[0]}")
        return 0
    inside = src_ref[1] if src_ref[1].startswith("/") else "/" + src_ref[1]
    src = host_path(node, state, inside)
    if src.endswith("/") and src_ref[1].endswith("/."):
        src = src.rstrip("/")
    if src_ref[1].endswith("/.") and not src.endswith("/."):
        src = src.rstrip("/") + "/."
    if not os.path.lexists(src.removesuffix("/.")):
        raise DockerError(f"{DAEMON_ERR} Could not find the file {src_ref[1]} in container {src_ref[0]}", 1)
    dest = os.path.abspath(dest_arg) + ("/" if dest_arg.endswith("/") else "")
    _copy_into(src, dest, f"invalid output path: directory {os.path.dirname(os.path.abspath(dest_arg))} does not exist")
    return 0


# ---------------------------------------------------------------------------------------------
# top
# ---------------------------------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            stat = fh.read()
    except OSError:
        return None
    head, _, tail = stat.rpartition(")")
    return [head.partition("(")[2], *tail.split()]


def _top_row(pid: int, boot: float, ticks: int, now: float) -> list[str] | None:
    import pwd

    stat = _proc_stat(pid)
    if stat is None:
        return None
    comm, fields = stat[0], stat[1:]
    # fields[0] is the state; ppid is fields[1]; utime/stime 11/12; starttime 19 (man 5 proc, minus 3)
    ppid = fields[1]
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    started = boot + int(fields[19]) / ticks
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
        user = pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        user = "?"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        argv = []
    cmd = " ".join(argv) if argv else f"[{comm}]"
    if fields[0] == "Z":
        cmd = f"[{comm}] <defunct>"
    elapsed = max(now - started, 1e-9)
    c = min(99, int(cpu * 100 / elapsed))
    lt = time.localtime(started)
    stime = time.strftime("%H:%M", lt) if now - started < 86400 else time.strftime("%b%d", lt)
    total = int(cpu)
    days, rem = divmod(total, 86400)
    cpu_time = (f"{days}-" if days else "") + f"{rem // 3600:02d}:{rem % 3600 // 60:02d}:{rem % 60:02d}"
    return [user, str(pid), ppid, str(c), stime, "?", cpu_time, cmd]


def _tabwrite(rows: list[list[str]]) -> str:
    """Go's tabwriter as docker's CLI sets it up for `top`: min width 20, padding 3, last cell free."""
    ncols = len(rows[0]) - 1
    widths = [max(20, max(len(r[i]) for r in rows) + 3) for i in range(ncols)]
    return "\n".join("".join(r[i].ljust(widths[i]) for i in range(ncols)) + r[-1] for r in rows)


def cmd_top(node: Node, args: list[str]) -> int:
    if not args:
        raise DockerError("\"docker top\" requires at least 1 argument.\nSee 'docker top --help'.", 1)
    ref, ps_args = args[0], args[1:]
    if ps_args:
        raise DockerError("sparksim: docker top takes no ps options here", 1)
    state = find_container(node, ref)
    if state is None:
        raise DockerError(f"{DAEMON_ERR} No such container: {ref}", 1)
    if state.get("status") != "running":
        raise DockerError(f"{DAEMON_ERR} container {state['id']} is not running", 1)
    marker = f"SPARKSIM_CID={state['id']}".encode()
    shim = state.get("shim_pid")
    pids = [p for p in _pids_with_env(marker) if p != shim and pid_alive(p)]
    if state.get("pid") and state["pid"] not in pids and pid_alive(state["pid"]):
        pids.append(state["pid"])
    try:
        with open("/proc/stat", encoding="utf-8") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime"))
    except (OSError, StopIteration):
        boot = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    now = time.time()
    rows = []
    for pid in pids:
        stat = _proc_stat(pid)
        row = _top_row(pid, boot, ticks, now)
        if stat is not None and row is not None:
            rows.append((int(stat[20]), pid, row))
    rows.sort(key=lambda r: (r[1] != state.get("pid"), r[0], r[1]))
    # Command lines as the container sees them (the rewrites of run/exec undone).
    cdir = _cdir(node, state["name"])
    for _start, _pid, row in rows:
        cmd = row[-1].replace(os.path.join(cdir, "stdout"), "/proc/1/fd/1")
        cmd = cmd.replace(os.path.join(cdir, "rootfs") + "/", "/")
        for mount in sorted(_visible_mounts(state), key=lambda m: -len(m.get("Source") or "")):
            if mount.get("Type") == "bind" and mount["Source"] not in ("/", mount["Destination"]):
                cmd = re.sub(re.escape(mount["Source"]) + r"(?=/|\s|$)", mount["Destination"].rstrip("/"), cmd)
        row[-1] = cmd
    print(_tabwrite([["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], *[r[2] for r in rows]]))
    return 0


COMMANDS = {
    "run": cmd_run,
    "exec": cmd_exec,
    "ps": cmd_ps,
    "logs": cmd_logs,
    "stop": cmd_stop,
    "start": cmd_start,
    "restart": cmd_restart,
    "rm": cmd_rm,
    "inspect": cmd_inspect,
    "image": cmd_image,
    "images": cmd_images,
    "cp": lambda node, args: cmd_cp(node, args),
    "top": lambda node, args: cmd_top(node, args),
    "version": cmd_version,
    "kill": lambda node, args: cmd_stop(node, args, signal.SIGKILL, "kill"),
}


def main(node: Node, argv: list[str]) -> int:
    if argv and argv[0] == "container" and len(argv) > 1:
        argv = argv[1:]
        if argv[0] == "ls":
            argv = ["ps", *argv[1:]]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(
            "Usage:  docker [OPTIONS] COMMAND\n\nA self-sufficient runtime for containers (simulated)\n\n"
            "Commands:\n  run, exec, ps, logs, stop, start, restart, kill, rm, inspect, cp, top, images, image, version"
        )
        return 0
    handler = COMMANDS.get(argv[0])
    if handler is None:
        eprint(f"docker: unknown command: docker {argv[0]}\n\nRun 'docker --help' for more information")
        return 1
    try:
        return handler(node, argv[1:])
    except DockerError as exc:
        eprint(exc.message)
        return exc.code
