"""`manage.py serve`: the one process of the embedded default (HTTP, websockets and the task worker).

`--workers N` runs N such processes on one listening socket (the kernel spreads the connections), for more than
one core's worth of HTTP. They share the database, and need a channel layer they share too (REDIS_URL): a
dashboard connected to one process must get the events the others write.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import connections

from commandline.base import OperatorCommand
from sparkcontrol.firstrun import admin_ensure, migrate_serialised

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Serving:
    """What every serving process of one start is given: the address, its threads, whether it runs the worker."""

    host: str
    port: int
    threads: int
    no_worker: bool

    def banner(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"Dashboard: http://{shown}:{self.port}/   Admin: http://{shown}:{self.port}/admin/"


class Command(OperatorCommand):
    help = "Migrate, create the first admin if needed, then serve HTTP + websockets and run the task worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9999)
        parser.add_argument("--no-worker", action="store_true", help="Do not run the task worker in this process.")
        parser.add_argument("--demo", action="store_true", help="Also start a simulated Spark cluster (sparksim).")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="Serving processes sharing the port, each with its task worker (more than 1 needs REDIS_URL).",
        )
        from sparkcontrol.serving import POOL_BUSY_TARGET

        parser.add_argument(
            "--threads",
            type=int,
            default=16,
            help=(
                f"Threads per process for sync views (each keeps a DB connection); {POOL_BUSY_TARGET} take calls at "
                f"once, more only while those are blocked."
            ),
        )
        # A process started by `--workers`: serve on the inherited socket, skip the once-per-start work.
        parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)

    def handle(  # type: ignore[override]
        self,
        *args,
        host: str,
        port: int,
        no_worker: bool,
        demo: bool,
        workers: int,
        threads: int,
        listen_fd: int | None,
        **options,
    ) -> None:
        if workers < 1 or threads < 1:
            raise CommandError("--workers and --threads take a number of at least 1")
        if settings.FAST_HANDLER:
            from sparkcontrol.serving import HandlerUnverified, fast_handler_check

            try:
                fast_handler_check()
            except HandlerUnverified as exc:
                raise CommandError(str(exc)) from None
        serving = Serving(host=host, port=port, threads=threads, no_worker=no_worker)
        if listen_fd is not None:
            self._serve(serving, endpoint_fd=listen_fd)
            return
        if workers > 1 and not settings.REDIS_URL:
            raise CommandError(
                "--workers above 1 needs REDIS_URL: the processes must share a channel layer, or a dashboard "
                "connected to one of them misses what the others do"
            )
        from sparkcontrol.startup import StartRefused, data_dir_claim, on_serve_start, port_claim

        # Nothing is touched (database, demo topology) before the port and the data directory are this process's.
        listener = claim = None
        try:
            listener = port_claim(host=host, port=port, shared=workers > 1)
            if not settings.REDIS_URL:
                # One process per data directory on the in-memory channel layer: a second one's dashboards would
                # miss the first one's swaps.
                claim = data_dir_claim(data_dir=settings.DATA_DIR)
            self._start(
                serving,
                listener=listener,
                demo=demo,
                workers=workers,
                previous_pid=claim.previous_pid if claim else None,
                on_serve_start=on_serve_start,
            )
        except StartRefused as exc:
            raise CommandError(str(exc)) from None
        finally:
            if listener is not None and listener.fileno() != -1:
                listener.close()
            if claim is not None:
                claim.release()

    def _start(
        self,
        serving: Serving,
        *,
        listener: socket.socket,
        demo: bool,
        workers: int,
        previous_pid: int | None,
        on_serve_start: Callable[..., threading.Event],
    ) -> None:
        migrate_serialised()
        username, password = admin_ensure()
        self.stdout.write(f"Spark Control data directory: {settings.DATA_DIR}")
        if password:
            self.stdout.write(self.style.WARNING(f"Created admin user '{username}' with password: {password}"))
            self.stdout.write("  (shown once; change it in the admin)")
        else:
            self.stdout.write(
                f"Forgot the admin password? Set a new one with: python manage.py changepassword {username}"
            )
        demo_cluster = None
        if demo:
            from sparkcontrol.demo import demo_start

            demo_cluster = demo_start(stdout=self.stdout)
        housekeeping = on_serve_start(previous_pid=previous_pid)
        try:
            if workers == 1:
                self._serve(serving, listener=listener, banner=serving.banner())
            else:
                self._supervise(serving, listener=listener, workers=workers)
        finally:
            housekeeping.set()
            if demo_cluster is not None:
                demo_cluster.stop()

    def _serve(
        self,
        serving: Serving,
        *,
        endpoint_fd: int | None = None,
        listener: socket.socket | None = None,
        banner: str = "",
    ) -> None:
        """Run daphne in this process; the task worker threads start from its event loop once it runs.

        `endpoint_fd` is a socket inherited from the `--workers` parent. `listener` is the socket `handle` bound:
        daphne adopts it (IPv4), or, for IPv6, which daphne cannot adopt, it is closed just before daphne binds the
        same address.
        """
        import asyncio

        from daphne.endpoints import build_endpoint_description_strings

        from sparkcontrol.memory import malloc_arenas_limit
        from sparkcontrol.serving import keep_database_connections, serving_server

        malloc_arenas_limit()  # before the pool and the workers start their threads
        if settings.FAST_HANDLER:
            # Its pool's threads live as long as the process: they may keep their connection between requests.
            # Django's own handler gives each request a new thread, whose connection must close with it.
            keep_database_connections()
        else:
            self.stdout.write("HTTP through Django's own ASGI handler (SPARKCONTROL_FAST_HANDLER=0)")
        workers = []

        def ready() -> None:
            if not serving.no_worker:
                from sparkcontrol.worker import start_embedded_worker

                workers.extend(
                    start_embedded_worker(
                        interval=settings.SPARKCONTROL["WORKER_INTERVAL_SECONDS"], loop=asyncio.get_event_loop()
                    )
                )
            if banner:
                self.stdout.write(self.style.SUCCESS(banner))
                self.stdout.flush()

        if listener is not None and listener.family == socket.AF_INET:
            # Twisted adopts a duplicate and closes the descriptor it was given: hand it over for good.
            endpoint_fd = listener.detach()
        elif listener is not None:
            listener.close()
        if endpoint_fd is not None:
            endpoints = build_endpoint_description_strings(file_descriptor=endpoint_fd)
        else:
            endpoints = build_endpoint_description_strings(host=serving.host, port=serving.port)
        server = serving_server(
            threads=serving.threads, fast=settings.FAST_HANDLER, endpoints=endpoints, verbosity=0, ready_callable=ready
        )
        # What exists now (modules, settings, URL patterns, ORM metadata) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise walk it all (~100 ms each, several a second under load).
        gc.collect()
        gc.freeze()
        # This thread runs the event loop from here on and makes no queries: the connection its start-up used
        # (migrations, the first admin) would only hold SQLite's caches.
        connections.close_all()
        try:
            server.run()
        finally:
            for worker in workers:
                worker.stop()

    def _supervise(self, serving: Serving, *, listener: socket.socket, workers: int) -> None:
        """Start `workers` serving processes, each on a listening socket of its own on the claimed address (see
        `port_share`); stop them all when one ends or on a signal."""
        from sparkcontrol.startup import port_share

        listeners = [listener, *(port_share(listener) for _ in range(workers - 1))]
        children = []
        for own in listeners:
            own.set_inheritable(True)
            argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "serve", "--listen-fd", str(own.fileno())]
            argv += ["--host", serving.host, "--port", str(serving.port), "--threads", str(serving.threads)]
            if serving.no_worker:
                argv.append("--no-worker")
            children.append(subprocess.Popen(argv, pass_fds=(own.fileno(),)))
        for own in listeners:
            own.close()
        self.stdout.write(
            self.style.SUCCESS(
                f"{serving.banner()}   ({workers} processes: {', '.join(str(child.pid) for child in children)})"
            )
        )
        self.stdout.flush()
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        exited: list[subprocess.Popen] = []
        try:
            while not stopping and not exited:
                time.sleep(0.2)
                exited = [child for child in children if child.poll() is not None]
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if exited and not stopping:
            child = exited[0]
            raise CommandError(f"serving process {child.pid} exited with {child.returncode}; the others were stopped")
