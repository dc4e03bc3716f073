"""A fake ``/proc/meminfo`` per node that follows the unified memory of a DGX Spark.

``<node>/meminfo`` is rewritten (atomically) whenever the memory picture changes: a container
starts (small overhead), vLLM loads weights (most of the memory), a container stops. Like the real
GB10, memory comes back gradually after ``docker stop``: the stopped container's share is released
linearly over ``SPARKSIM_MEM_RELEASE_SECONDS`` (default 1.5 s) by a short-lived helper process that
keeps rewriting the file until nothing is left to release.

The page cache is its own figure (``Cached``; default 2.3 GiB, set with :func:`set_page_cache`): it
lowers ``MemFree`` but not ``MemAvailable``, as reclaimable cache does. This matters because on the GB10
(unified memory) ``cudaMemGetInfo`` - which vLLM's start-up check reads through
``torch.cuda.mem_get_info()`` - reports ``MemFree``, so page cache counts as used memory there (see
vllm-project/vllm#48140); the fake vLLM checks :func:`read_meminfo`'s ``MemFree``.

State lives in ``<node>/mem.json`` and is updated under an flock on ``<node>/mem.lock``.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

from sparksim.common import Node, atomic_write, package_parent

KIB_PER_GIB = 1024 * 1024
MEM_TOTAL_KB = 128 * KIB_PER_GIB - 2_500_000
BASE_USED_GIB = 5.5
USABLE_GIB = 119.0
DEFAULT_RELEASE_SECONDS = 1.5
DEFAULT_PAGE_CACHE_GIB = 2.3
SLACK_KB = 600_000  # free memory the kernel keeps aside (watermarks), neither free for vLLM nor cache


class _Locked:
    def __init__(self, node: Node):
        self.node = node
        self.path = os.path.join(node.dir, "mem.json")

    def __enter__(self) -> dict:
        self.lock_fd = os.open(os.path.join(self.node.dir, "mem.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.state = json.load(fh)
        except (FileNotFoundError, ValueError):
            self.state = {}
        self.state.setdefault("loads", {})
        self.state.setdefault("releasing", [])
        return self.state

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                atomic_write(self.path, json.dumps(self.state))
                _render(self.node, self.state)
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
            os.close(self.lock_fd)


def _pending_release(state: dict, now: float) -> float:
    total = 0.0
    for amount, t_stop, duration in state["releasing"]:
        if duration <= 0:
            continue
        total += amount * max(0.0, 1.0 - (now - t_stop) / duration)
    return total


def available_kb(state: dict, now: float | None = None) -> int:
    now = time.time() if now is None else now
    used_gib = BASE_USED_GIB + sum(state["loads"].values()) + _pending_release(state, now)
    return max(0, int(MEM_TOTAL_KB - used_gib * KIB_PER_GIB))


def page_cache_kb(state: dict) -> int:
    return int(float(state.get("page_cache_gib", DEFAULT_PAGE_CACHE_GIB)) * KIB_PER_GIB)


def _render(node: Node, state: dict) -> None:
    avail = available_kb(state)
    cache = min(page_cache_kb(state), avail)
    free = max(0, avail - cache - SLACK_KB)
    lines = [
        ("MemTotal", MEM_TOTAL_KB),
        ("MemFree", free),
        ("MemAvailable", avail),
        ("Buffers", 12_345),
        ("Cached", cache),
        ("SwapCached", 0),
        ("Active", 4_100_000),
        ("Inactive", 1_900_000),
        ("SwapTotal", 16_777_212),
        ("SwapFree", 16_777_212),
        ("Shmem", 65_536),
        ("HugePages_Total", 0),
    ]
    text = "".join(
        f"{k + ':':<16}{v:>8} kB\n" if not k.startswith("HugePages") else f"{k + ':':<16}{v:>8}\n" for k, v in lines
    )
    atomic_write(node.meminfo, text)


def init(node: Node) -> None:
    with _Locked(node) as state:
        state["loads"] = {}
        state["releasing"] = []


def set_usage(node: Node, key: str, gib: float) -> None:
    """Set the memory held by one user (a container id, or ``<cid>:vllm`` for a model)."""
    with _Locked(node) as state:
        if gib <= 0:
            state["loads"].pop(key, None)
        else:
            state["loads"][key] = float(gib)


def set_page_cache(node: Node, gib: float) -> None:
    """Set the node's page cache (what ``sync; echo 3 > /proc/sys/vm/drop_caches`` would bring to ~0)."""
    with _Locked(node) as state:
        state["page_cache_gib"] = max(0.0, float(gib))


def release(node: Node, prefix: str) -> None:
    """Release every load whose key starts with ``prefix``, gradually, as the GB10 does."""
    duration = node.float_setting("SPARKSIM_MEM_RELEASE_SECONDS", None, DEFAULT_RELEASE_SECONDS)
    now = time.time()
    with _Locked(node) as state:
        amount = 0.0
        for key in [k for k in state["loads"] if k.startswith(prefix)]:
            amount += state["loads"].pop(key)
        if amount > 0 and duration > 0:
            state["releasing"].append([amount, now, duration])
        spawn = bool(state["releasing"]) and not state.get("updater_until", 0) > now
        if spawn:
            state["updater_until"] = now + duration
    if spawn:
        subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]); import sparksim.meminfo as m; m.updater(sys.argv[2])",
                package_parent(),
                node.dir,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # Not a process of the container that released the memory: a container's processes are killed when it
            # stops (found by its SPARKSIM_CID), and the release would then never complete.
            env={
                **{k: v for k, v in os.environ.items() if k not in ("SPARKSIM_CID", "SPARKSIM_CONTAINER")},
                "SPARKSIM_ROOT": node.root,
            },
        )


def updater(node_dir: str) -> None:
    """Rewrite the node's meminfo until every pending release is complete."""
    node = Node(node_dir)
    while True:
        time.sleep(0.2)
        with _Locked(node) as state:
            now = time.time()
            state["releasing"] = [r for r in state["releasing"] if now - r[1] < r[2]]
            if not state["releasing"]:
                state["updater_until"] = 0
                return
            state["updater_until"] = now + 1.0


def read_meminfo(path: str) -> dict[str, int]:
    """The ``kB`` figures of a meminfo file by name (empty when it cannot be read)."""
    values: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                fields = rest.split()
                if fields and fields[0].isdigit():
                    values[name.strip()] = int(fields[0])
    except FileNotFoundError:
        pass
    return values


def read_available_kb(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return None
