"""`serve --demo`: a simulated two-node Spark cluster (sparksim) registered as the topology, for a first look."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from catalog.models import ModelEntry
from cluster.models import Role, Service, SparkHost
from cluster.services import cluster_settings_get
from swaps.services import serving_clear

DEMO_MODELS = [
    {"key": "tiny", "name": "Tiny (simulated)", "repo": "sim/tiny-model", "nodes": 1},
    {"key": "big-2node", "name": "Big, both Sparks (simulated)", "repo": "sim/big-model", "nodes": 2},
    {"key": "oom", "name": "Runs out of memory (simulated)", "repo": "sim/oom", "nodes": 1},
    {"key": "slow-compile", "name": "Silent compile phase (simulated)", "repo": "sim/silent-compile", "nodes": 1},
]


def sim_register(*, sim: Any) -> None:
    """Point the topology at a running SimCluster: hosts with pinned keys, launcher path, vLLM port."""
    SparkHost.objects.filter(enabled=True).exclude(name__in=[node.name for node in sim.nodes]).update(enabled=False)
    for node in sim.nodes:
        SparkHost.objects.update_or_create(
            name=node.name,
            defaults={
                "address": node.host,
                "cluster_ip": node.ip,
                "ssh_port": node.port,
                "ssh_user": node.user,
                "role": Role.HEAD if node.role == "head" else Role.WORKER,
                "key_path": sim.client_key_path,
                "host_key": node.host_key_line,
                "enabled": True,
            },
        )
    cluster = cluster_settings_get()
    cluster.vllm_port = sim.vllm_port
    cluster.launcher_path = sim.launcher_path
    cluster.save()
    roots = settings.SPARKCONTROL["LOCAL_MODEL_ROOTS"]
    models_root = f"{sim.root}/models"
    if models_root not in roots:
        roots.append(models_root)


class Demo:
    """What `serve --demo` started: the simulated Sparks, with the fake services running as containers on them."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def stop(self) -> None:
        self.sim.stop()


def demo_services(*, sim: Any, directory: Path) -> Path:
    """A fake server for every built-in service but the head vLLM, each a container on the worker Spark (so the
    dashboard can restart it), pointed at by a services-overrides file."""
    overrides: dict[str, dict[str, Any]] = {}
    node = sim.workers[0] if sim.workers else sim.head
    ports = {}
    for service in Service.objects.exclude(key="vllm").order_by("key"):
        if service.kind not in ("embeddings", "qdrant", "stt", "tts", "http"):
            continue
        ports[service.key] = sim.run_service(
            node.name, service.key, service.kind, model=(service.models_served or [None])[0]
        )
        overrides[service.key] = {"node": node.name, "port": ports[service.key], "container": service.key}
    # They load in parallel; the first sweeps must find them up.
    for key, port in ports.items():
        sim.wait_listening(port, name=key)
    path = directory / "services-overrides.yaml"
    path.write_text(yaml.safe_dump({"services": overrides}, sort_keys=True))
    settings.SPARKCONTROL["SERVICES_OVERRIDES"] = str(path)
    return path


def demo_start(*, stdout: Any) -> Demo:
    """Start sparksim in the data directory, register it, add simulated catalog entries and fake services."""
    from sparksim import SimCluster

    directory = Path(settings.DATA_DIR) / "sparksim"
    # SPARKSIM_LAUNCHER_DIR names a spark-vllm-docker checkout: the Sparks then run the real launcher.
    sim = SimCluster(root=directory, nodes=2, launcher_dir=os.environ.get("SPARKSIM_LAUNCHER_DIR") or None).start()
    sim_register(sim=sim)
    # A fresh simulator serves nothing, whatever the previous run left recorded as served.
    serving_clear(reason="the demo started a fresh simulator")
    for model in DEMO_MODELS:
        ModelEntry.objects.get_or_create(key=model["key"], defaults=model)
    demo_services(sim=sim, directory=directory)
    stdout.write(
        f"Demo: simulated Sparks {', '.join(f'{n.name}@127.0.0.1:{n.port}' for n in sim.nodes)}; "
        f"vLLM port {sim.vllm_port}; {sim.launcher_kind} launcher; fake speech, TTS, embeddings and Qdrant services. "
        f'Try the dashboard, or POST /api/swap {{"model": "tiny"}}.'
    )
    return Demo(sim)
