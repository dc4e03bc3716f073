"""Load sampling: what one sample costs, and that none of it lands on the request path.

`python -m bench.sampling [--quick] [--out F]` (or from `python -m bench`, in a child process of its own):
sparksim's two Sparks with the one-node model served, then
- CPU and wall time per sample (`load_sample_take` in this process: two SSH commands on pooled connections, one
  `/metrics` read, one transaction), warm, after a first cold sample;
- the service's API read latency (`GET /api/swap/lock`, one client, sequential) and its idle CPU, with sampling off
  (`SPARKCONTROL_LOAD_SAMPLING=0`) and on at ten times the default rate (a sample a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, summary, tree_cpu_seconds
from bench.net import HttpConnection, build_request
from testkit.service import clean_env


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] sampling: {message}", flush=True)


async def _reads(port: int, headers: dict[str, str], count: int) -> list[float]:
    connection = HttpConnection("127.0.0.1", port)
    raw = build_request("GET", "/api/swap/lock", headers=headers)
    samples = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            status, _, _ = await connection.request(raw)
            samples.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"GET /api/swap/lock answered {status}")
    finally:
        await connection.close()
    return samples


def _serve_model(harness: Any, model: str) -> None:
    response = harness.client.post(
        f"{harness.url}/api/swap", json={"model": model}, headers=harness.bearer("operate"), timeout=30
    )
    if response.status_code != 202:
        raise RuntimeError(f"POST /api/swap answered {response.status_code}: {response.text}")
    swap_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = harness.client.get(f"{harness.url}/api/swap/{swap_id}", headers=harness.bearer("read")).json()["state"]
        if state == "ready":
            return
        if state in ("failed", "cancelled", "interrupted"):
            raise RuntimeError(f"the swap ended {state}")
        time.sleep(0.2)
    raise RuntimeError("the swap did not finish")


def _request_path(harness: Any, *, env: dict[str, str], reads: int, idle_s: float) -> dict[str, Any]:
    harness.restart_service(env=env)
    headers = harness.bearer("read")
    asyncio.run(_reads(harness.port, headers, 50))  # warm-up
    cpu = tree_cpu_seconds(harness.service.pid)
    time.sleep(idle_s)
    idle_cpu_ms_per_s = (tree_cpu_seconds(harness.service.pid) - cpu) * 1000 / idle_s
    latencies = asyncio.run(_reads(harness.port, headers, reads))
    return {"read_ms": summary(latencies), "idle_cpu_ms_per_s": idle_cpu_ms_per_s}


def measure(*, quick: bool) -> dict[str, Any]:
    from bench.harness import MODEL_1NODE, Harness

    samples, reads, idle_s = (10, 1000, 5.0) if quick else (30, 3000, 15.0)
    harness = Harness.create(workdir=None, load_seconds=0.5, serve_args=[])
    out: dict[str, Any] = {}
    try:
        _log("starting sparksim and the service, serving the one-node model")
        harness.start()
        _serve_model(harness, MODEL_1NODE)
        from telemetry.services import load_sample_take

        cold = load_sample_take(timeout=5.0)
        out["cold_sample_ms"] = cold.total_s * 1000
        out["nodes"], out["engines"] = len(cold.nodes), len(cold.engines)
        cpu, wall, read = [], [], []
        _log(f"{samples} warm samples in this process")
        for _ in range(samples):
            report = load_sample_take(timeout=5.0)
            cpu.append(report.cpu_s * 1000)
            wall.append(report.total_s * 1000)
            read.append(report.read_s * 1000)
        out["sample_cpu_ms"], out["sample_wall_ms"], out["sample_read_ms"] = summary(cpu), summary(wall), summary(read)
        _log(f"API reads with sampling off, then on at one sample a second ({reads} reads each)")
        out["off"] = _request_path(harness, env={"SPARKCONTROL_LOAD_SAMPLING": "0"}, reads=reads, idle_s=idle_s)
        out["on"] = _request_path(harness, env={"SPARKCONTROL_LOAD_SAMPLE_SECONDS": "1"}, reads=reads, idle_s=idle_s)
        from telemetry.models import LoadSample

        out["samples_written_by_service"] = LoadSample.objects.count() - (samples + 1) * (out["nodes"] + 1)
    finally:
        harness.close()
    return out


def run_in_child(*, workdir: Path, quick: bool) -> dict[str, Any]:
    """Run `measure` in a fresh process (it sets up Django for a data directory of its own); returns its results."""
    import subprocess

    out = workdir / "sampling.json"
    argv = [PYTHON, "-m", "bench.sampling", "--out", str(out), *(["--quick"] if quick else [])]
    done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"bench.sampling failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def report(results: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    off, on = results["off"], results["on"]
    return "\n".join(
        [
            f"load sample ({results['nodes']} Sparks, {results['engines']} vLLM): "
            f"CPU {results['sample_cpu_ms']['median']:.1f} ms median (p99 {results['sample_cpu_ms']['p99']:.1f}), "
            f"wall {results['sample_wall_ms']['median']:.1f} ms, reads {results['sample_read_ms']['median']:.1f} ms",
            f"GET /api/swap/lock, sampling off: p50 {off['read_ms']['median']:.2f} ms, "
            f"p99 {off['read_ms']['p99']:.2f} ms; "
            f"on (1 s): p50 {on['read_ms']['median']:.2f} ms, p99 {on['read_ms']['p99']:.2f} ms",
            f"service idle CPU: off {off['idle_cpu_ms_per_s']:.1f} ms/s, on (1 s) {on['idle_cpu_ms_per_s']:.1f} ms/s",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sampling", description=__doc__)
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = measure(quick=args.quick)
    print(report(results), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
