"""`manage.py serve`: the one process of the embedded default (HTTP, websockets and the task worker)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from sparkcontrol.firstrun import admin_ensure

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Migrate, create the first admin if needed, then serve HTTP + websockets and run the task worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9999)
        parser.add_argument("--no-worker", action="store_true", help="Do not run the task worker in this process.")
        parser.add_argument("--demo", action="store_true", help="Also start a simulated Spark cluster (sparksim).")

    def handle(self, *args, host: str, port: int, no_worker: bool, demo: bool, **options) -> None:  # type: ignore[override]
        call_command("migrate", interactive=False, verbosity=0)
        username, password = admin_ensure()
        self.stdout.write(f"Spark Control data directory: {settings.DATA_DIR}")
        if password:
            self.stdout.write(self.style.WARNING(f"Created admin user '{username}' with password: {password}"))
            self.stdout.write("  (shown once; change it in the admin)")
        demo_cluster = None
        if demo:
            from sparkcontrol.demo import demo_start

            demo_cluster = demo_start(stdout=self.stdout)
        workers = []
        if not no_worker:
            from sparkcontrol.worker import start_embedded_worker

            workers = start_embedded_worker(interval=settings.SPARKCONTROL["WORKER_INTERVAL_SECONDS"])
        from sparkcontrol.startup import on_serve_start

        housekeeping = on_serve_start()
        shown_host = f"[{host}]" if ":" in host else host
        self.stdout.write(
            self.style.SUCCESS(f"Dashboard: http://{shown_host}:{port}/   Admin: http://{shown_host}:{port}/admin/")
        )
        self.stdout.flush()
        try:
            self._run_server(host, port)
        finally:
            housekeeping.set()
            for worker in workers:
                worker.stop()
            if demo_cluster is not None:
                demo_cluster.stop()

    def _run_server(self, host: str, port: int) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from sparkcontrol.asgi import application

        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            verbosity=0,
        ).run()
