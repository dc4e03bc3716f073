"""Shared plumbing of the fake programs: node identity, settings, records, time formats.

Every program in a node's ``bin/`` (and the fake launcher) is a tiny wrapper that knows the
absolute directory of its node. From that directory the program finds everything else:

``<root>/nodes/<name>/``  the node (``bin/``, ``containers/``, ``.cache/huggingface``, ``meminfo``)
``<root>/cluster.json``   the cluster description (sim IP -> node name, ports, ...)
``<root>/record.jsonl``   one JSON line per invocation of a fake program

Settings a test can change while the cluster runs are looked up in this order: the process
environment, the node's ``sim.env`` file, then the cluster-wide files in ``<root>``.

This module is imported by short-lived programs, so it only imports cheap stdlib modules.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

FAIL_MODES = (
    "fail-launch",
    "oom",
    "never-ready",
    "dies-after-ready",
    "vanish",
    "silent-compile",
    "wedged",
    "worker-crash",
    "gated-model",
)
DEFAULT_LOAD_SECONDS = 2.0
DEFAULT_SILENT_SECONDS = 3.0
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SIM_KNOBS = ("SPARKSIM_FAIL", "SPARKSIM_LOAD_SECONDS", "SPARKSIM_SILENT_SECONDS")


def package_parent() -> str:
    """The directory that holds the ``sparksim`` package (what the wrappers put on sys.path)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_record(root: str, entry: dict) -> None:
    """Append one JSON line to ``<root>/record.jsonl`` with a single O_APPEND write."""
    data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    fd = os.open(os.path.join(root, "record.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_records(root: str, prog: str | None = None, event: str | None = None) -> list[dict]:
    path = os.path.join(root, "record.jsonl")
    out: list[dict] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return out
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if prog is not None and rec.get("prog") != prog:
            continue
        if event is not None and rec.get("event") != event:
            continue
        out.append(rec)
    return out


def parse_env_file(path: str) -> dict[str, str]:
    """Read a ``KEY=VALUE`` file (comments, blank lines and surrounding quotes allowed)."""
    values: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                line = raw.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, value = line.split("=", 1)
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                values[key.strip()] = value
    except FileNotFoundError:
        pass
    return values


def write_env_file(path: str, values: dict[str, str]) -> None:
    text = "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
    atomic_write(path, text)


def atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_text(path: str, default: str | None = None) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return default


class Node:
    """One simulated node, as seen from a program running on it."""

    def __init__(self, node_dir: str):
        self.dir = os.path.abspath(node_dir)
        self.name = os.path.basename(self.dir)
        self.root = os.path.dirname(os.path.dirname(self.dir))
        self.bin = os.path.join(self.dir, "bin")
        self.containers_dir = os.path.join(self.dir, "containers")
        self.hf_home = os.path.join(self.dir, ".cache", "huggingface")
        self.meminfo = os.path.join(self.dir, "meminfo")
        self.launcher_dir = os.path.join(self.dir, "spark-vllm-docker")
        self._cluster: dict | None = None
        self._node_env: dict[str, str] | None = None

    # -- cluster description -------------------------------------------------------------
    @property
    def cluster(self) -> dict:
        if self._cluster is None:
            try:
                with open(os.path.join(self.root, "cluster.json"), encoding="utf-8") as fh:
                    self._cluster = json.load(fh)
            except (FileNotFoundError, ValueError):
                self._cluster = {"nodes": []}
        return self._cluster

    def node_entry(self, name: str | None = None) -> dict | None:
        name = name or self.name
        for entry in self.cluster.get("nodes", []):
            if entry.get("name") == name:
                return entry
        return None

    @property
    def ip(self) -> str:
        if os.environ.get("SPARKSIM_NODE") == self.name and os.environ.get("SPARKSIM_IP"):
            return os.environ["SPARKSIM_IP"]
        entry = self.node_entry()
        return entry["ip"] if entry else "127.0.0.1"

    def peer_by_ip(self, ip: str) -> Node | None:
        for entry in self.cluster.get("nodes", []):
            if entry.get("ip") == ip:
                return Node(entry["dir"])
        return None

    # -- settings --------------------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        value = os.environ.get(key)
        if value:
            return value
        if self._node_env is None:
            self._node_env = parse_env_file(os.path.join(self.dir, "sim.env"))
        value = self._node_env.get(key)
        if value:
            return value
        return None

    def float_setting(self, key: str, root_file: str | None, default: float) -> float:
        candidates = [self.setting(key)]
        if root_file:
            candidates.append(read_text(os.path.join(self.root, root_file)))
        for value in candidates:
            if value:
                try:
                    return max(0.0, float(value))
                except ValueError:
                    continue
        return default

    def clock_offset(self) -> float:
        """How far this node's clock is from this machine's, in seconds (``SPARKSIM_CLOCK_OFFSET``; default 0): what
        ``date`` prints and the times docker takes and shows are the node's."""
        try:
            return float(self.setting("SPARKSIM_CLOCK_OFFSET") or 0)
        except ValueError:
            return 0.0

    def fail_mode(self) -> str | None:
        mode = self.setting("SPARKSIM_FAIL") or read_text(os.path.join(self.root, "fail_mode"))
        if mode and mode.lower() not in ("none", "off", "0", ""):
            return mode.strip().removeprefix("sim/")
        return None

    def login_env(self) -> dict[str, str]:
        """The environment an SSH session on this node gets (mirrors the authorized_keys options)."""
        env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": self.dir,
            "SPARKSIM_NODE": self.name,
            "SPARKSIM_ROOT": self.root,
            "SPARKSIM_IP": self.ip,
            "SPARKSIM_MEMINFO": self.meminfo,
        }
        for key in ("USER", "LOGNAME", "LANG", "TERM"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def record(self, prog: str, argv: list[str], event: str = "start", t: float | None = None, **extra) -> None:
        entry = {
            "t": time.time() if t is None else t,
            "node": self.name,
            "prog": prog,
            "argv": list(argv),
            "event": event,
        }
        entry.update(extra)
        try:
            write_record(self.root, entry)
        except OSError:
            pass


def fail_mode_for_text(text: str) -> str | None:
    """The failure mode named by a ``sim/<mode>`` repo id inside a command line, if any."""
    for match in re.finditer(r"(?<![\w./-])sim/([\w.-]+)", text):
        if match.group(1) in FAIL_MODES:
            return match.group(1)
    return None


# -- time formats ------------------------------------------------------------------------------
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_docker_time(value: str, now: float | None = None) -> float:
    """Parse a ``docker logs --since/--until`` value into a unix timestamp.

    Accepts RFC 3339 timestamps (with or without fraction and offset), dates, unix timestamps
    (``1700000000`` or ``1700000000.123456789``) and Go durations relative to now (``10s``, ``1m30s``).
    """
    import datetime as _dt

    now = time.time() if now is None else now
    value = value.strip()
    if not value:
        raise ValueError("empty time")
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    if re.fullmatch(rf"(?:{_DURATION_RE.pattern})+", value):
        total = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_RE.findall(value))
        return now - total
    text = value.replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)", text)
    if match:
        frac = match.group(2) or ""
        if len(frac) > 7:
            frac = frac[:7]
        text = match.group(1) + frac + match.group(3)
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f'invalid value for "since": failed to parse value as time or duration: "{value}"') from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.datetime.now().astimezone().tzinfo)
    return parsed.timestamp()


def rfc3339(t: float, nanos: bool = True) -> str:
    import datetime as _dt

    dt = _dt.datetime.fromtimestamp(t, tz=_dt.UTC)
    if nanos:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}000Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
