"""sparksim: a simulated NVIDIA DGX Spark cluster on loopback.

Each node is a real OpenSSH ``sshd`` on 127.0.0.1 whose sessions see fake ``docker``, ``vllm`` and
``~/spark-vllm-docker/launch-cluster.sh`` programs that imitate the real ones, failure modes
included, so the control plane can drive it exactly as it drives real Sparks::

    from sparksim import SimCluster

    with SimCluster(root=tmp_path, nodes=2, load_seconds=0.5) as sim:
        head = sim.head                       # .name .role .host .port .user .ip .host_key_line .dir
        sim.client_key_path, sim.launcher_path, sim.vllm_port
        sim.make_local_model("ten31-v2")      # -> absolute path, same on every node
        sim.set_fail_mode("oom")              # or None; also SPARKSIM_FAIL / sim/<mode> repo ids
        sim.records(prog="launch-cluster.sh")

Failure modes, by repo id ``sim/<mode>`` (or forced for any model with ``set_fail_mode`` or the
``SPARKSIM_FAIL`` setting):

- ``fail-launch``: the launcher prints an error and exits 1 before starting anything.
- ``oom``: vLLM logs a CUDA out-of-memory traceback during load and exits; the container stays.
- ``never-ready``: vLLM logs its loading lines and never binds the port.
- ``dies-after-ready``: ready, then about 1 s later ``EngineDeadError``; ``/health`` answers 503.
- ``vanish``: the container disappears during load (as if ``docker stop`` had been run).
- ``silent-compile``: a log-silent phase of ``SPARKSIM_SILENT_SECONDS`` (default 3) before ready.
- ``wedged``: ready and ``/health`` 200, but completions never finish (metrics show them running).

Settings (process environment of a session, or per node with ``sim.set_node_env(node, KEY, value)``):
``SPARKSIM_FAIL`` (force a failure mode), ``SPARKSIM_LOAD_SECONDS`` (default 2, or ``set_load_seconds``),
``SPARKSIM_SILENT_SECONDS`` (default 3, or ``set_silent_seconds``), ``SPARKSIM_LAUNCHER_VERSION=old``
(a pre-2026 launcher), ``SPARKSIM_LAUNCHER_SETTLE_SECONDS`` (pause after starting containers, default
0.2), ``SPARKSIM_MEM_RELEASE_SECONDS`` (how long memory takes to come back after a stop, default 1.5).

Memory: ``$SPARKSIM_MEMINFO`` is the node's fake ``/proc/meminfo``; ``cat``, ``grep``, ``awk``, ``head``
and ``tail`` run in a session on a node read it when given the path ``/proc/meminfo``.

The real launcher: ``SimCluster(launcher_dir=DIR)`` (default: the environment variable
``SPARKSIM_LAUNCHER_DIR``; ``""`` forces the fake) installs a copy of that spark-vllm-docker checkout as
every node's ``~/spark-vllm-docker`` instead of the fake launcher (``cluster.json`` says which:
``"launcher": "real"|"fake"``). Each node's ``bin/`` has what the real script calls on a Spark
(:mod:`sparksim.node_tools`): ``ssh``/``scp`` to the other nodes by cluster IP (the remote session gets
that node's login environment only), ``ip`` (the cluster IP on the CX7 interface ``enp1s0f1np1``),
``ibdev2netdev``, ``nc -z``, ``nvidia-smi``, ``earlyoom``; ``docker`` has ``cp`` and ``top`` besides.
``SPARKSIM_CX7_LINKS`` (node setting, or ``sim.set_cx7_links(n, node_name=None)``): CX7 links up,
``0`` (a single Spark without cable: autodiscovery fails), ``2`` (a cabled pair; the default with
several nodes) or ``4`` (a mesh; the default of a 1-node cluster is 0).

The Hugging Face Hub: every cluster serves a simulated Hub on loopback (:mod:`sparksim.hub`, ``sim.hub_url``) and
each node's sessions have ``HF_ENDPOINT`` pointing at it, with the real ``hf`` (huggingface_hub's CLI) in ``bin/``
when huggingface_hub is installed (``sim.set_downloader(node, False)`` takes it away). Repos under ``sim/`` exist
there; ``sim/fail-download`` breaks halfway; ``sim.set_hub(speed=..., weights_bytes=..., repo=..., shards=...,
config=...)`` sets transfer speed and sizes; ``sim.hub_requests()`` lists what it answered. The default repos
(``sim/tiny-model``, ``sim/big-model``, ``sim/<failure mode>``) are in every node's cache from the start; other
``sim/`` repos arrive by a download.

``python -m sparksim up|down|record`` runs a cluster from the command line
(``up --launcher-dir DIR`` for the real launcher).
The fake programs import :mod:`sparksim` on every start, so this module imports nothing eagerly.
"""

from __future__ import annotations

__all__ = ["SimCluster", "SimNode", "FAIL_MODES"]


def __getattr__(name: str):
    if name in ("SimCluster", "SimNode"):
        from sparksim import cluster

        return getattr(cluster, name)
    if name == "FAIL_MODES":
        from sparksim.common import FAIL_MODES

        return FAIL_MODES
    raise AttributeError(f"module 'sparksim' has no attribute {name!r}")
