"""Small shared pieces of the harness: statistics, ports, resident memory and CPU time, the machine."""

from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, Any]:
    """Median, p99, min, max and count of a sample."""
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "p99": percentile(values, 99),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


def wait_port(port: int, *, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def wait_port_closed(port: int, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            return
        time.sleep(0.02)
    raise RuntimeError(f"127.0.0.1:{port} still accepts connections after {timeout:.0f} s")


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """Every descendant of a process (by the parent pid in /proc/<pid>/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its descendants (a serving process that forks workers counts them all)."""
    total = 0
    for member in [pid, *children(pid)]:
        try:
            total += rss_kib(member)
        except (OSError, RuntimeError):
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its descendants that are still running."""
    total = 0.0
    for member in [pid, *children(pid)]:
        try:
            total += cpu_seconds(member)
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine() -> dict[str, Any]:
    """What the numbers were taken on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan, math.nan, math.nan)
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_before": [round(value, 2) for value in load],
    }


def steadiness(*, seconds: float = 5.0) -> dict[str, float]:
    """How steady this machine's processor is: the same fixed loop timed again and again for `seconds` (p10, median
    and p90 in ms). On a shared virtual machine its time can swing by more than half from one second to the next;
    a figure that compares two runs taken seconds apart (M6's share) is no steadier than this."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        total = 0
        for number in range(300_000):
            total += number * number
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "loops": len(times),
        "p10_ms": round(times[len(times) // 10], 1),
        "median_ms": round(times[len(times) // 2], 1),
        "p90_ms": round(times[len(times) * 9 // 10], 1),
    }


def steadiness_text(info: dict[str, Any]) -> str:
    """`machine()`'s steadiness as a clause for a report ("" when it was not taken)."""
    steady = info.get("steadiness")
    if not steady:
        return ""
    return (
        f"a fixed loop took {steady['p10_ms']}–{steady['p90_ms']} ms (p10–p90 of {steady['loops']}, "
        f"×{steady['p90_ms'] / steady['p10_ms']:.2f})"
    )
