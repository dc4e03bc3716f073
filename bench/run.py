"""`python -m bench [--quick]`: start what the metrics need, run M1-M8 and their baselines, print one table, write
`bench/results.json` and the table in `docs/PERFORMANCE.md`.

Order: the service (`manage.py serve` on a data directory of its own, sparksim's two nodes) is measured first,
alone on the machine; it is then stopped and the baselines run one at a time; the sweeps, the load sampling and
the gateway (M8) run last, each in a process of its own. Nothing is hard-coded: every figure, baseline included,
comes from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, steadiness
from bench.report import build_table, print_table, update_docs

RESULTS = ROOT / "bench" / "results.json"
FULL = {
    "swaps": 30,
    "replacing": 3,
    # A floor replay after every swap: the share is the median of 30 differences of two ~3 s figures that each move
    # by +-50 ms from one run to the next; with 10 pairs, one repetition's median moved by +-25 ms on its own.
    "floor_every": 1,
    "cold": 10,
    "ssh_warm": 20,
    "ssh_cold": 10,
    "api_seconds": 10.0,
    "dry_runs": 10,
    "baseline_messages": 40,
    "list_requests": 200,
}
QUICK = {
    "swaps": 10,
    "replacing": 1,
    "floor_every": 2,
    "cold": 5,
    "ssh_warm": 10,
    "ssh_cold": 5,
    "api_seconds": 5.0,
    "dry_runs": 4,
    "baseline_messages": 20,
    "list_requests": 60,
}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure_service(config: dict[str, Any], *, workdir: str | None, serve_args: list[str]) -> dict[str, Any]:
    from bench import growth, push, swaps
    from bench.harness import MODEL_2NODE, Harness

    out: dict[str, Any] = {}
    harness = Harness.create(workdir=workdir, load_seconds=2.0, serve_args=serve_args)
    try:
        _log(f"starting sparksim and the service in {harness.workdir}")
        harness.start()
        growth.list_latency(harness.port, headers=harness.bearer("read"), requests=20)
        time.sleep(1.0)
        out["rss_idle_kib"] = harness.service_rss_kib()

        _log("M2 baselines: paramiko out of the box and Spark Control's SSH layer, command -> launcher's first line")
        out["ssh"] = swaps.run_ssh_baselines(harness, warm=config["ssh_warm"], cold=config["ssh_cold"])

        _log(
            f"M1, M6, M2 (warm): {config['swaps']} swaps of the two-node model, two peer pollers watching each, "
            f"a floor replay after every {config['floor_every']}"
        )
        out["swaps"] = swaps.run_swaps(
            harness,
            count=config["swaps"],
            replace_count=config["replacing"],
            floor_every=config["floor_every"],
            log=_log,
        )
        _log(f"M2 (cold): {config['cold']} dry runs, each on new SSH connections")
        out["m2_cold"] = swaps.run_cold_dispatch(harness, count=config["cold"])
        swaps.idle_cluster(harness)

        out["m5"] = {}
        for size in (50, 200):
            time.sleep(0.5)
            out[f"rss_before_{size}_sockets_kib"] = harness.service_rss_kib()
            _log(f"M5: push latency to {size} dashboard sockets, {config['dry_runs']} dry runs")

            def opened(size: int = size) -> None:
                out[f"rss_{size}_sockets_kib"] = harness.service_rss_kib()

            out["m5"][str(size)] = push.run_ours(
                harness.port,
                cookie=harness.session_cookie,
                token=harness.tokens["operate"],
                model=MODEL_2NODE,
                sockets=size,
                dry_runs=config["dry_runs"],
                on_open=opened,
            )
        time.sleep(1.0)
        out["rss_after_sockets_closed_kib"] = harness.service_rss_kib()

        out["m4"] = {"1": measure_api(harness, config)}
        _log("M7: history list latency, then 10,000 swaps inserted and the same again")
        read = harness.bearer("read")
        out["m7_list_small"] = growth.list_latency(harness.port, headers=read, requests=config["list_requests"])
        growth.insert_history(model_key=MODEL_2NODE)
        out["m7_list_10k"] = growth.list_latency(harness.port, headers=read, requests=config["list_requests"])
        out["m7_list_10k_deep"] = growth.list_latency(
            harness.port, headers=read, requests=config["list_requests"], before=growth.middle_time()
        )
        time.sleep(1.0)
        out["rss_10k_history_kib"] = harness.service_rss_kib()

        redis = start_redis(harness.logs)
        if redis is None:
            _log("M4 with --workers 2: skipped (no redis-server on this machine)")
        else:
            try:
                _log("M4 again on `serve --workers 2` with a Redis channel layer (REDIS_URL)")
                harness.restart_service(serve_args=[*harness.serve_args, "--workers", "2"], env={"REDIS_URL": redis[1]})
                out["m4"]["2"] = measure_api(harness, config)
            finally:
                redis[0].stop()
    finally:
        harness.close()
    return out


def measure_api(harness: Any, config: dict[str, Any]) -> dict[str, Any]:
    """M4 on the running service: the most it does (closed loop) and its latency at the target rate (open loop)."""
    from bench import api
    from bench.common import tree_cpu_seconds

    seconds = config["api_seconds"]
    out: dict[str, Any] = {}
    read = harness.bearer("read")
    _log(f"M4: 64 clients, {seconds:.0f} s of GET /api/swap/lock back to back, then at 1,000 req/s")
    cpu, own = tree_cpu_seconds(harness.service.pid), time.process_time()
    out["reads"] = api.run_reads(harness.port, "/api/swap/lock", headers=read, seconds=seconds)
    used, own = tree_cpu_seconds(harness.service.pid) - cpu, time.process_time() - own
    answered = max(1, sum(out["reads"]["statuses"].values()))
    out["reads"]["cpu_ms_per_request"] = used * 1000 / answered
    out["reads"]["client_cpu_ms_per_request"] = own * 1000 / answered
    out["reads_at_target"] = api.run_reads(harness.port, "/api/swap/lock", headers=read, seconds=seconds, rate=1000)
    mark = api.audit_mark()
    _log(f"M4: 64 clients, {seconds:.0f} s of lock acquire / extend / release back to back, then at 400 ops/s")
    out["lock"] = api.run_lock_cycles(harness.port, token=harness.tokens["operate"], seconds=seconds)
    api.force_release(harness.port, token=harness.tokens["admin"])
    out["lock_at_target"] = api.run_lock_cycles(
        harness.port, token=harness.tokens["operate"], seconds=seconds, rate=400
    )
    api.force_release(harness.port, token=harness.tokens["admin"])
    out["double_grants"] = api.double_grants(mark)
    return out


def start_redis(log_dir: Path) -> tuple[Any, str] | None:
    """A private redis-server on a free loopback port (no persistence), or None when it is not installed."""
    import shutil

    from bench.common import wait_port
    from testkit.service import clean_env, free_port, spawn

    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    child = spawn(f"redis-{port}", argv, env=clean_env(), log_dir=log_dir)
    wait_port(port, timeout=20, process=child.process)
    return child, f"redis://127.0.0.1:{port}/0"


def measure_baselines(config: dict[str, Any], *, log_dir: Path, server: str) -> dict[str, Any]:
    from bench import api, push

    out: dict[str, Any] = {}
    _log(f"M4 baselines: bare ASGI hello-world ({server}) and ninja on daphne out of the box")
    out["m4"] = api.run_baselines(log_dir=log_dir, seconds=config["api_seconds"], server=server)
    _log("M5 baseline: Channels in-memory layer on daphne out of the box, 50 and 200 sockets")
    out["m5"] = push.run_baseline(log_dir=log_dir, sizes=[50, 200], messages=config["baseline_messages"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter load runs (~3 minutes)")
    parser.add_argument(
        "--workdir", help="keep the service's files here (default: a temporary directory, removed; BENCH_KEEP=1 keeps)"
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="an extra argument for `manage.py serve` (repeatable)"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the table in docs/PERFORMANCE.md")
    parser.add_argument("--json", default=str(RESULTS), help=f"where to write the results (default {RESULTS})")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the whole table N times; report the median of medians and spread"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat takes 1 to 20")
    if args.repeat > 1 and args.workdir:
        parser.error("--workdir keeps one run's files; it cannot be combined with --repeat")
    from sparksim.cluster import SSHD

    if not os.path.exists(SSHD):
        print(f"The bench drives sparksim, which needs OpenSSH's sshd at {SSHD}: apt-get install openssh-server")
        return 2
    if args.repeat > 1:
        return _repeated(args)
    results = run_once(args)
    if results is None:
        return 1
    print_table(results)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    _log(f"wrote {args.json}")
    if not args.no_docs:
        update_docs(results)
        _log("updated docs/PERFORMANCE.md")
    return 0


def _repeated(args: argparse.Namespace) -> int:
    from bench import repeat

    runs = []
    for number in range(1, args.repeat + 1):
        _log(f"repetition {number} of {args.repeat}")
        results = _run_in_child(args)
        if results is None:
            return 1
        runs.append(results)
    rows = repeat.combine(runs)
    repeat.print_rows(rows, repeat=len(runs))
    Path(args.json).write_text(json.dumps({"runs": runs, "combined": rows}, indent=2, default=str) + "\n")
    _log(f"wrote {args.json}")
    if not args.no_docs:
        update_docs(runs[-1], repeated=repeat.markdown(rows, runs))
        _log("updated docs/PERFORMANCE.md")
    return 0


def _run_in_child(args: argparse.Namespace) -> dict[str, Any] | None:
    """One whole table in a process of its own (it prints its table): a run sets this process's Django up on its
    service's data directory, which is removed when the run ends, so the next run cannot share the process."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sparkcontrol-bench-run-") as scratch:
        out = Path(scratch) / "results.json"
        argv = [sys.executable, "-m", "bench", "--no-docs", "--json", str(out)]
        if args.quick:
            argv.append("--quick")
        for value in args.serve_arg:
            argv += ["--serve-arg", value]
        if subprocess.run(argv, cwd=ROOT).returncode != 0 or not out.exists():
            return None
        return json.loads(out.read_text())


def run_once(args: argparse.Namespace) -> dict[str, Any] | None:
    """One whole table; None when the run failed (the children's logs are kept and named)."""
    config = QUICK if args.quick else FULL
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine(), "steadiness": steadiness()},
        "mode": "quick" if args.quick else "full",
        "serve_args": args.serve_arg,
        "config": config,
    }
    import tempfile

    log_dir = Path(tempfile.mkdtemp(prefix="sparkcontrol-bench-logs-"))
    try:
        results["service"] = measure_service(config, workdir=args.workdir, serve_args=args.serve_arg)
        # The hello-world runs on daphne, the server `manage.py serve` runs.
        results["baselines"] = measure_baselines(config, log_dir=log_dir, server="daphne")
        _log("M3 and M7 sweeps (own process and data directory; fake services in their own processes)")
        from bench.sweeps import run_in_child

        results["sweeps"] = run_in_child(workdir=log_dir, quick=args.quick)
        _log("load sampling: CPU per sample, API reads with sampling off and on (own process and data directory)")
        from bench import sampling

        results["sampling"] = sampling.run_in_child(workdir=log_dir, quick=args.quick)
        _log(sampling.report(results["sampling"]))
        _log("M8: the gateway's added time to first token at 64 streams (own process, sparksim and services)")
        from bench import gateway

        results["gateway"] = gateway.run_in_child(quick=args.quick)
    except Exception:
        traceback.print_exc()
        _log(f"the run failed; logs of the children are in {log_dir}")
        return None
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(log_dir, ignore_errors=True)
    results["runtime_s"] = round(time.monotonic() - started, 1)
    results["machine"]["load_after"] = [round(value, 2) for value in os.getloadavg()]
    results["table"] = build_table(results)
    return results
