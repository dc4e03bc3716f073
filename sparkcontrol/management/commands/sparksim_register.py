"""`manage.py sparksim_register --root DIR`: use a simulated cluster started with `python -m sparksim up`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from django.core.management.base import CommandError, CommandParser

from commandline.base import OperatorCommand
from sparkcontrol.demo import sim_register


class Command(OperatorCommand):
    help = "Register the Spark hosts (with pinned host keys), launcher path and vLLM port of a running sparksim."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--root", required=True, help="The sparksim root directory (holds cluster.json).")

    def handle(self, *args, root: str, **options) -> None:  # type: ignore[override]
        path = Path(root) / "cluster.json"
        try:
            data = json.loads(path.read_text())
            nodes = [SimpleNamespace(**node) for node in data["nodes"]]
            sim = SimpleNamespace(
                root=data["root"],
                nodes=nodes,
                client_key_path=data["client_key_path"],
                launcher_path=data["launcher_path"],
                vllm_port=data["vllm_port"],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"{path}: not a sparksim cluster description: {exc}") from exc
        sim_register(sim=sim)
        self.stdout.write(f"registered {', '.join(n.name for n in nodes)}; vLLM port {sim.vllm_port}")
