"""Entry point of the wrapper scripts installed in each simulated node.

A wrapper is generated per node and per program; it only takes the time, puts the package on
``sys.path`` and calls :func:`run`, which writes the ``start`` record before anything else.
"""

from __future__ import annotations

import os
import sys

from sparksim.common import Node

PROGRAMS = {
    "docker": "sparksim.fake_docker",
    "vllm": "sparksim.fake_vllm",
    "sparksim-service": "sparksim.fake_services:container_main",
    "launch-cluster.sh": "sparksim.fake_launcher",
    "ssh": "sparksim.node_tools:ssh_main",
    "scp": "sparksim.node_tools:scp_main",
    "ip": "sparksim.node_tools:ip_main",
    "ibdev2netdev": "sparksim.node_tools:ibdev2netdev_main",
    "nc": "sparksim.node_tools:nc_main",
}


def run(prog: str, node_dir: str, t0: float) -> int:
    node = Node(node_dir)
    argv = sys.argv[1:]
    node.record(prog, argv, "start", t=t0)
    module_name, _, func = PROGRAMS[prog].partition(":")
    module = __import__(module_name, fromlist=["main"])
    try:
        code = getattr(module, func or "main")(node, argv) or 0
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`... | head`): silence the final flush as well.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
