"""`python -m bench.servers`: M4's API read (`GET /api/swap/lock`, a read token, 64 keep-alive clients) on `serve`
and on standard ASGI servers running the same project, in one run, rounds interleaved (decision 0037).

Each configuration serves one data directory (migrated once); per round and configuration: a closed loop (the
most it answers: req/s, median and p99 latency, server CPU per request) and an open loop at `--rate` (latency
counted from when each request was due). A server that is not installed is reported as such; granian is not a
dependency of the project (`pip install granian` to include it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api import run_reads
from bench.common import PYTHON, ROOT, machine, tree_cpu_seconds, wait_port
from testkit.service import clean_env, free_port, spawn

THREADS = 16


def fast_application() -> Any:
    """serve's application (`PooledSyncHandler` behind the body limit) for another server (`--factory`)."""
    import sparkcontrol.asgi  # noqa: F401 - sets Django up
    from sparkcontrol.serving import keep_database_connections, serving_application

    keep_database_connections()
    return serving_application(threads=THREADS)


def configurations() -> dict[str, tuple[list[str], dict[str, str], str | None]]:
    """name -> (argv with {port}, extra environment, the module it needs)."""
    manage = [PYTHON, "manage.py", "serve", "--no-worker", "--host", "127.0.0.1", "--port", "{port}"]
    uvicorn = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--lifespan", "off"]
    uvicorn += ["--no-access-log", "--log-level", "warning"]
    granian = [PYTHON, "-m", "granian", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    granian += ["--log-level", "warning", "--no-access-log"]
    return {
        "serve (daphne, fast handler)": (manage, {}, None),
        "serve, SPARKCONTROL_FAST_HANDLER=0 (daphne, Django's handler)": (
            manage,
            {"SPARKCONTROL_FAST_HANDLER": "0"},
            None,
        ),
        "daphne, Django's handler": (
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "-v", "0", "sparkcontrol.asgi:application"],
            {},
            "daphne",
        ),
        "uvicorn, Django's handler": ([*uvicorn, "sparkcontrol.asgi:application"], {}, "uvicorn"),
        "uvicorn, fast handler": ([*uvicorn, "--factory", "bench.servers:fast_application"], {}, "uvicorn"),
        "granian ASGI, Django's handler": (
            [*granian, "--interface", "asgi", "sparkcontrol.asgi:application"],
            {},
            "granian",
        ),
        "granian ASGI, fast handler": (
            [*granian, "--interface", "asgi", "--factory", "bench.servers:fast_application"],
            {},
            "granian",
        ),
        "granian WSGI, Django's WSGI handler (no websockets)": (
            [*granian, "--interface", "wsgi", "--blocking-threads", str(THREADS), "sparkcontrol.wsgi:application"],
            {},
            "granian",
        ),
    }


def measure(
    name: str, argv: list[str], env: dict[str, str], *, logs: Path, token: str, seconds: float, rate: float
) -> dict[str, Any]:
    port = free_port()
    child = spawn(f"{name.split(' ')[0]}-{port}", [part.format(port=port) for part in argv], env=env, log_dir=logs)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        wait_port(port, timeout=90, process=child.process)
        run_reads(port, "/api/swap/lock", headers=headers, seconds=2.0)  # warm: threads, connections, caches
        cpu = tree_cpu_seconds(child.pid)
        closed = run_reads(port, "/api/swap/lock", headers=headers, seconds=seconds)
        used = tree_cpu_seconds(child.pid) - cpu
        opened = run_reads(port, "/api/swap/lock", headers=headers, seconds=seconds, rate=rate)
    except Exception as exc:  # noqa: BLE001 - reported with the server's log, the other servers still run
        return {"error": f"{exc}: {child.output(1500)}"}
    finally:
        child.stop()
    answered = max(1, sum(closed["statuses"].values()))
    return {
        "rate": closed["rate"],
        "median_ms": closed["latency_ms"]["median"],
        "p99_ms": closed["latency_ms"]["p99"],
        "errors": closed["errors"],
        "cpu_ms_per_request": used * 1000 / answered,
        "open_rate": rate,
        "open_median_ms": opened["latency_ms"]["median"],
        "open_p99_ms": opened["latency_ms"]["p99"],
        "open_errors": opened["errors"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="the open loop's offered requests per second")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument(
        "--only", action="append", default=[], help="run only the configurations whose name starts with this"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sparkcontrol-servers-"))
    logs = workdir / "logs"
    logs.mkdir()
    env = clean_env(
        DJANGO_SETTINGS_MODULE="sparkcontrol.settings",
        SPARKCONTROL_DATA_DIR=str(workdir / "data"),
        SPARKCONTROL_ENV_FILE=str(workdir / "no.env"),
        SPARKCONTROL_ADMIN_PASSWORD="servers-admin-password",
    )
    (workdir / "data").mkdir()
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    created = subprocess.run(
        [PYTHON, "manage.py", "apitoken", "create", "servers-bench", "--scope", "read"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token = created.stdout.strip().splitlines()[-1]
    results: dict[str, list[dict[str, Any]]] = {}
    started = machine()
    try:
        for round_number in range(args.rounds):
            for name, (command, extra, module) in configurations().items():
                if args.only and not any(name.startswith(prefix) for prefix in args.only):
                    continue
                if module is not None and importlib.util.find_spec(module) is None:
                    results.setdefault(name, []).append({"error": f"{module} is not installed"})
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] round {round_number + 1}: {name}", flush=True)
                outcome = measure(
                    name, command, {**env, **extra}, logs=logs, token=token, seconds=args.seconds, rate=args.rate
                )
                print(f"    {outcome}", flush=True)
                results.setdefault(name, []).append(outcome)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmachine: {started}; load after: {[round(v, 2) for v in os.getloadavg()]}")
    header = "| server | req/s | median ms | p99 ms | CPU ms/req | at {rate:g}/s: median ms | p99 ms |"
    print(header.format(rate=args.rate))
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        good = [run for run in runs if "error" not in run]
        if not good:
            print(f"| {name} | {runs[0]['error'][:80]} | | | | | |")
            continue

        def mid(key: str, good: list[dict[str, Any]] = good) -> float:
            return statistics.median(run[key] for run in good)

        print(
            f"| {name} | {mid('rate'):,.0f} | {mid('median_ms'):.1f} | {mid('p99_ms'):.1f} | "
            f"{mid('cpu_ms_per_request'):.2f} | {mid('open_median_ms'):.1f} | {mid('open_p99_ms'):.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": started, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
