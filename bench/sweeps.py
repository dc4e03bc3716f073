"""M3 (sweep time / probe timeout with hung, dripping and refusing services) and the sweep half of M7 (sweep time
at 10 / 100 / 500 services), with the baselines of M3: sequential probing, and concurrent httpx with per-phase
timeouts only.

Runs in its own process with its own data directory (`python -m bench.sweeps --data-dir D --out F`), so the
service's database and the harness's load stay out of it. The fake services run in separate processes
(`python -m sparksim.fake_services`), so they do not share this process's CPU or event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, summary
from testkit.service import clean_env

T = 1.0
KINDS = ["vllm", "embeddings", "qdrant", "stt", "tts", "http"]
HEALTH_PATHS = {
    "vllm": "/v1/models",
    "embeddings": "/v1/models",
    "qdrant": "/readyz",
    "stt": "/health",
    "tts": "/health",
    "http": "/",
}
MIXED = ["hang"] * 10 + ["slow-drip"] * 3 + ["refuse"] * 5 + ["ok"] * 32


def interleaved(count: int) -> list[str]:
    """`count` modes in M3's proportions (20% hung, 6% slow-drip, 10% refused), spread so every prefix keeps them."""
    shares = {"hang": 10 / 50, "slow-drip": 3 / 50, "refuse": 5 / 50}
    modes, given = [], dict.fromkeys(shares, 0)
    for index in range(1, count + 1):
        behind = {mode: share * index - given[mode] for mode, share in shares.items()}
        mode = max(behind, key=behind.get)
        if behind[mode] >= 1:
            given[mode] += 1
            modes.append(mode)
        else:
            modes.append("ok")
    return modes


PER_PHASE_CAP = 10.0


class Farm:
    """`python -m sparksim.fake_services kind:mode ...` in a child process; its services as (kind, mode, url)."""

    def __init__(self, specs: list[str]) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-m", "sparksim.fake_services", *specs],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.services: list[tuple[str, str, str]] = []
        assert self.process.stdout is not None
        for _ in specs:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the fake service farm exited before listing its services")
            kind, mode, url = line.split()
            self.services.append((kind, mode, url))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _rows(services: list[tuple[str, str, str]]) -> None:
    """Make the Service table exactly these fake services."""
    from cluster.models import Service

    Service.objects.all().delete()
    rows = []
    for index, (kind, _mode, url) in enumerate(services):
        models = ["sim/tiny-model"] if kind == "vllm" else []
        models = {"embeddings": ["sim/embed"], "stt": ["sim/parakeet"], "tts": ["sim/kokoro"]}.get(kind, models)
        rows.append(
            Service(
                key=f"svc-{index:03d}",
                name=f"{kind} {index}",
                kind=kind,
                url=url,
                health_path=HEALTH_PATHS[kind],
                models_served=models,
            )
        )
    Service.objects.bulk_create(rows)


def _timed_sweeps(runs: int) -> list[float]:
    from cluster.sweeps import sweep_status

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        sweep_status(timeout=T)
        times.append(time.perf_counter() - started)
    return times


def _targets() -> list[Any]:
    from cluster.sweeps import _plan

    return _plan(keys=None, with_hosts=False).targets


async def _sequential(targets: list[Any]) -> float:
    """Peer style: one probe after another, each bounded by T (the project's own probe functions)."""
    from cluster.probes import probe_client, probe_service

    started = time.perf_counter()
    async with probe_client(size=1, timeout=T) as client:
        for target in targets:
            await probe_service(client, target, timeout=T)
    return time.perf_counter() - started


async def _per_phase(targets: list[Any]) -> tuple[float, bool]:
    """Peer style: all at once, but bounded only by httpx's per-phase timeouts (T each for connect, read, ...)."""
    import httpx

    async def probe(client: httpx.AsyncClient, target: Any) -> None:
        try:
            await client.get(target.base_url + (target.health_path or "/"))
        except httpx.HTTPError:
            pass

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=httpx.Timeout(T), limits=httpx.Limits(max_connections=200)) as client:
        tasks = [asyncio.create_task(probe(client, target)) for target in targets]
        _, pending = await asyncio.wait(tasks, timeout=PER_PHASE_CAP)
        capped = bool(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return min(time.perf_counter() - started, PER_PHASE_CAP), capped


def measure(*, quick: bool) -> dict[str, Any]:
    mixed_farm = Farm([f"{KINDS[i % len(KINDS)]}:{mode}" for i, mode in enumerate(MIXED)])
    healthy_farm = Farm([f"{KINDS[i % len(KINDS)]}:ok" for i in range(500)])
    fleet_farm = Farm([f"{KINDS[i % len(KINDS)]}:{mode}" for i, mode in enumerate(interleaved(500))])
    try:
        out: dict[str, Any] = {"timeout_s": T}
        # M3: the mixed fleet of 50.
        _rows(mixed_farm.services)
        _timed_sweeps(1)  # warm-up: imports and the first connections of the process
        mixed = _timed_sweeps(3 if quick else 7)
        out["m3_mixed_ratio"] = summary([t / T for t in mixed])
        targets = _targets()
        out["m3_sequential_s"] = asyncio.run(_sequential(targets))
        per_phase, capped = asyncio.run(_per_phase(targets))
        out["m3_per_phase_s"] = per_phase
        out["m3_per_phase_capped"] = capped
        # M3: all healthy, 50.
        _rows(healthy_farm.services[:50])
        _timed_sweeps(2)
        out["m3_healthy_ms"] = summary([t * 1000 for t in _timed_sweeps(10 if quick else 30)])
        healthy = _targets()
        out["m3_healthy_sequential_ms"] = summary(
            [asyncio.run(_sequential(healthy)) * 1000 for _ in range(3 if quick else 7)]
        )
        # M7: growth with the number of services, in M3's proportions (in units of T), and all healthy (ms).
        fleet, healthy_growth = {}, {}
        for size in (10, 100, 500):
            _rows(fleet_farm.services[:size])
            _timed_sweeps(1)
            fleet[str(size)] = summary([t / T for t in _timed_sweeps(3 if quick else 5)])
            _rows(healthy_farm.services[:size])
            _timed_sweeps(1)
            healthy_growth[str(size)] = summary([t * 1000 for t in _timed_sweeps(3 if quick else 7)])
        out["m7_sweep_ratio"] = fleet
        out["m7_sweep_healthy_ms"] = healthy_growth
        return out
    finally:
        mixed_farm.stop()
        healthy_farm.stop()
        fleet_farm.stop()


def run_in_child(*, workdir: Path, quick: bool) -> dict[str, Any]:
    """Run `measure` in a fresh process with its own data directory; returns its results."""
    data_dir = workdir / "sweeps-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    out = workdir / "sweeps.json"
    env = clean_env(
        DJANGO_SETTINGS_MODULE="sparkcontrol.settings",
        SPARKCONTROL_DATA_DIR=str(data_dir),
        SPARKCONTROL_ENV_FILE=str(workdir / "no.env"),
    )
    argv = [PYTHON, "-m", "bench.sweeps", "--out", str(out), *(["--quick"] if quick else [])]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"bench.sweeps failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sparkcontrol.settings")
    import logging

    import django
    from django.core.management import call_command

    django.setup()
    logging.getLogger().setLevel(logging.WARNING)
    call_command("migrate", interactive=False, verbosity=0)
    Path(args.out).write_text(json.dumps(measure(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
