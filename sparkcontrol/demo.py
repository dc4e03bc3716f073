"""`serve --demo`: a simulated two-node Spark cluster (sparksim) registered as the topology, for a first look."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from catalog.models import ModelEntry
from cluster.models import Role, SparkHost
from cluster.services import cluster_settings_get

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


def demo_start(*, stdout: Any) -> Any:
    """Start sparksim in the data directory, register it, and add a few simulated catalog entries."""
    from sparksim import SimCluster

    sim = SimCluster(root=settings.DATA_DIR / "sparksim", nodes=2).start()
    sim_register(sim=sim)
    for model in DEMO_MODELS:
        ModelEntry.objects.get_or_create(key=model["key"], defaults=model)
    stdout.write(
        f"Demo: simulated Sparks {', '.join(f'{n.name}@127.0.0.1:{n.port}' for n in sim.nodes)}; "
        f'vLLM port {sim.vllm_port}. Try: POST /api/swap {{"model": "tiny"}} or the dashboard.'
    )
    return sim
