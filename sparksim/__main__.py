"""Command line: ``python -m sparksim up|down|record``.

``up``     start a cluster in the foreground, print its JSON, stop cleanly on SIGINT/SIGTERM;
           ``--launcher-dir DIR`` (or ``SPARKSIM_LAUNCHER_DIR``) installs that real spark-vllm-docker
           checkout on every node instead of the fake launcher.
``down``   stop a cluster started by ``up`` in another process (pid file), then sweep leftovers.
``record`` print the records of a cluster (one JSON object per line).
``guard``  (started by SimCluster) wait until standard input ends, i.e. the process that started the cluster has
           ended, then stop every process of the cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from sparksim.cluster import PID_FILE, SimCluster, kill_sim_processes, sim_sweep
from sparksim.common import read_records
from sparksim.fake_docker import pid_alive


def _up(args: argparse.Namespace) -> int:
    sim = SimCluster(
        root=args.root,
        nodes=args.nodes,
        load_seconds=args.load_seconds,
        vllm_port=args.vllm_port,
        launcher_dir=args.launcher_dir,
    )
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    pid_path = None
    try:
        sim.start()
        pid_path = os.path.join(sim.root, PID_FILE)
        with open(pid_path, "w", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        print(json.dumps(sim.as_json(), indent=2), flush=True)
        print(
            "sparksim is up; Ctrl-C (or `python -m sparksim down --root ROOT`) stops it.", file=sys.stderr, flush=True
        )
        while not stop["flag"]:
            time.sleep(0.2)
    finally:
        sim.stop()
        if pid_path and os.path.exists(pid_path):
            os.remove(pid_path)
    print("sparksim stopped.", file=sys.stderr, flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    root = os.path.abspath(args.root)
    pid_path = os.path.join(root, PID_FILE)
    try:
        with open(pid_path, encoding="utf-8") as fh:
            pid = int(fh.read().strip())
    except (FileNotFoundError, ValueError):
        pid = None
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 20
            while time.time() < deadline and pid_alive(pid):
                time.sleep(0.1)
        except ProcessLookupError:
            pass
    if os.path.isdir(os.path.join(root, "nodes")):
        from sparksim import fake_docker
        from sparksim.common import Node

        for name in os.listdir(os.path.join(root, "nodes")):
            fake_docker.stop_all(Node(os.path.join(root, "nodes", name)), timeout=1.0)
    kill_sim_processes(root)
    print("sparksim is down.", file=sys.stderr)
    return 0


def _guard(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of the owner stops the guard
    while sys.stdin.buffer.read(65536):
        pass
    sim_sweep(os.path.abspath(args.root))
    return 0


def _record(args: argparse.Namespace) -> int:
    for rec in read_records(os.path.abspath(args.root), prog=args.prog, event=args.event):
        print(json.dumps(rec))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparksim", description="A simulated DGX Spark cluster.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a cluster in the foreground")
    up.add_argument("--root", help="directory of the cluster (default: a new temporary directory)")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--load-seconds", type=float, default=2.0)
    up.add_argument("--vllm-port", type=int, default=None)
    up.add_argument(
        "--launcher-dir",
        default=None,
        help="a spark-vllm-docker checkout to install on every node instead of the fake launcher "
        "(default: $SPARKSIM_LAUNCHER_DIR)",
    )
    down = sub.add_parser("down", help="stop a cluster started by `up` in another process")
    down.add_argument("--root", required=True)
    rec = sub.add_parser("record", help="print the records of a cluster")
    rec.add_argument("--root", required=True)
    rec.add_argument("--prog")
    rec.add_argument("--event")
    guard = sub.add_parser("guard", help=argparse.SUPPRESS)
    guard.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    return {"up": _up, "down": _down, "record": _record, "guard": _guard}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
