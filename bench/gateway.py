"""M7-gateway: what the /v1/ gateway adds to time to first token and costs in throughput at 64 concurrent streams.

Same run, same load generator, same fake vLLM (sparksim's, started by a real swap): the baseline streams straight
from the fake vLLM; the gateway runs as the real service (`manage.py serve`, daphne) once per HTTP client it can
use (SPARKCONTROL_GATEWAY_HTTP_CLIENT), in front of the same vLLM. Phases alternate so a noisy machine hurts
all of them alike.

    .venv/bin/python -m bench.gateway [--streams 64] [--seconds 10] [--tokens 32] [--rounds 2] [--clients aiohttp]

Prints a table and writes bench/gateway-results.json (or `--out`); `run()` returns the same dict for a harness.
`python -m bench` runs it in a process of its own (`run_in_child`) with the default client alone, as M8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _load(url: str, token: str | None, *, streams: int, seconds: float, tokens: int, model: str) -> dict:
    """`streams` closed-loop clients streaming chat completions for `seconds`: TTFT per request, chunks per second.

    The clients start 25 ms apart and are counted only once all are streaming: the fake vLLM listens with
    http.server's backlog of 5, so 64 simultaneous connects would measure SYN retransmits, not streaming.
    """
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens, "stream": True}
    ttft: list[float] = []
    chunks = 0
    errors = 0
    completed = 0
    ramp = streams * 0.025 + tokens * 0.05 + 0.5
    begin = time.perf_counter()
    window_start = begin + ramp
    deadline = window_start + seconds

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def worker(index: int) -> None:
            nonlocal chunks, errors, completed
            await asyncio.sleep(index * 0.025)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                counted = started >= window_start
                first = None
                try:
                    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
                        if response.status != 200:
                            errors += counted
                            await response.read()
                            await asyncio.sleep(0.05)
                            continue
                        buffer = b""
                        async for data in response.content.iter_any():
                            buffer += data
                            while b"\n\n" in buffer:
                                event, buffer = buffer.split(b"\n\n", 1)
                                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                                    continue
                                if first is None and b'"content": ""' in event:
                                    continue  # the role-only opening chunk is not a token
                                if first is None:
                                    first = time.perf_counter() - started
                                now = time.perf_counter()
                                chunks += window_start <= now < deadline
                    if counted and first is not None:
                        ttft.append(first)
                        completed += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += counted

        await asyncio.gather(*(worker(index) for index in range(streams)))
    return {
        "requests": completed,
        "errors": errors,
        "chunks_per_s": chunks / seconds,
        "ttft_ms": [round(value * 1000, 2) for value in ttft],
    }


def _summary(phases: list[dict]) -> dict:
    ttft = [value for phase in phases for value in phase["ttft_ms"]]
    return {
        "requests": sum(p["requests"] for p in phases),
        "errors": sum(p["errors"] for p in phases),
        "chunks_per_s": round(statistics.mean(p["chunks_per_s"] for p in phases), 1),
        "ttft_p50_ms": round(_percentile(ttft, 0.5), 2),
        "ttft_p99_ms": round(_percentile(ttft, 0.99), 2),
    }


# The gateway's HTTP clients (SPARKCONTROL_GATEWAY_HTTP_CLIENT); the first is the default.
CLIENTS = ("aiohttp", "httpx")


def run(
    *,
    streams: int = 64,
    seconds: float = 10.0,
    tokens: int = 32,
    rounds: int = 2,
    clients: tuple[str, ...] = CLIENTS,
) -> dict[str, Any]:
    """Measure the baseline and the gateway with each of `clients`; returns the figures."""
    import httpx

    from sparksim import SimCluster
    from testkit.api import client, swap_to
    from testkit.gateway import Deployment

    unknown = sorted(set(clients) - set(CLIENTS))
    if not clients or unknown:
        raise ValueError(f"clients must be some of {', '.join(CLIENTS)}; got {', '.join(clients) or 'none'}")
    root = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    results: dict[str, list[dict]] = {"direct": [], **{f"gateway-{kind}": [] for kind in clients}}
    with SimCluster(root=root / "sim", nodes=1, load_seconds=0.5) as sim:
        deployment = Deployment(root / "data", sim=sim, farm_services={}, models=["bench"])
        servers = {}
        try:
            for index, kind in enumerate(clients):  # the first runs the task worker that swaps the model in
                servers[kind] = deployment.serve(worker=index == 0, SPARKCONTROL_GATEWAY_HTTP_CLIENT=kind)
            with client(servers[clients[0]], deployment.tokens["operate"]) as api:
                swap = swap_to(api, "bench")
                assert swap["state"] == "ready", swap
            direct = f"http://127.0.0.1:{sim.vllm_port}"
            token = deployment.tokens["inference"]
            for server in servers.values():  # warm up: connections, snapshots, token lookups
                with httpx.Client(timeout=30) as warm:
                    warm.post(
                        f"{server.url}/v1/chat/completions",
                        json={"model": "bench", "max_tokens": 1},
                        headers={"Authorization": f"Bearer {token}"},
                    ).raise_for_status()
            for _ in range(rounds):
                for name, url, auth in (
                    ("direct", direct, None),
                    *((f"gateway-{kind}", servers[kind].url, token) for kind in clients),
                ):
                    phase = asyncio.run(
                        _load(url, auth, streams=streams, seconds=seconds, tokens=tokens, model="bench")
                    )
                    results[name].append(phase)
        finally:
            deployment.close()
    summary = {name: _summary(phases) for name, phases in results.items()}
    base = summary["direct"]
    for row in summary.values():
        row["added_ttft_p50_ms"] = round(row["ttft_p50_ms"] - base["ttft_p50_ms"], 2)
        row["added_ttft_p99_ms"] = round(row["ttft_p99_ms"] - base["ttft_p99_ms"], 2)
        row["throughput_loss_pct"] = round(100 * (1 - row["chunks_per_s"] / base["chunks_per_s"]), 2)
    return {
        "metric": "M7-gateway",
        "streams": streams,
        "seconds_per_phase": seconds,
        "tokens_per_request": tokens,
        "rounds": rounds,
        "results": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help=f"the gateway's HTTP clients to measure (of {','.join(CLIENTS)})"
    )
    parser.add_argument("--out", help="write the results as JSON here (default bench/gateway-results.json)")
    args = parser.parse_args(argv)
    clients = tuple(name.strip() for name in args.clients.split(",") if name.strip())
    if not clients or set(clients) - set(CLIENTS):
        parser.error(f"--clients takes some of {','.join(CLIENTS)}")
    if args.streams < 1 or args.seconds <= 0 or args.tokens < 1 or args.rounds < 1:
        parser.error("--streams, --tokens and --rounds take 1 or more, --seconds more than 0")
    report = run(streams=args.streams, seconds=args.seconds, tokens=args.tokens, rounds=args.rounds, clients=clients)
    header = f"{'M7-gateway':<18}{'req':>7}{'err':>5}{'chunks/s':>10}{'TTFT p50':>10}{'p99':>9}"
    header += f"{'+p50':>8}{'+p99':>8}{'loss':>8}"
    print(header)
    for name, row in report["results"].items():
        print(
            f"{name:<18}{row['requests']:>7}{row['errors']:>5}{row['chunks_per_s']:>10}{row['ttft_p50_ms']:>10}"
            f"{row['ttft_p99_ms']:>9}{row['added_ttft_p50_ms']:>8}{row['added_ttft_p99_ms']:>8}"
            f"{row['throughput_loss_pct']:>7}%"
        )
    out = Path(args.out) if args.out else Path(__file__).with_name("gateway-results.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def run_in_child(*, quick: bool) -> dict[str, Any]:
    """M8 for `python -m bench`: the default client alone, in a process of its own (it starts its own sparksim and
    services); returns `run()`'s figures."""
    import subprocess

    from testkit.service import clean_env

    seconds, rounds = (4.0, 1) if quick else (8.0, 2)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-out-") as scratch:
        out = Path(scratch) / "gateway.json"
        argv = [sys.executable, "-m", "bench.gateway", "--seconds", str(seconds), "--rounds", str(rounds)]
        argv += ["--clients", CLIENTS[0], "--out", str(out)]
        done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"bench.gateway failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        return json.loads(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
