"""Background tasks of the swaps app: the swap runner, on a queue of its own ("swaps").

A swap holds its worker for the whole load; its own queue means a worker kept for swaps is never busy with a
webhook delivery or a probe sweep when the next swap is requested."""

from __future__ import annotations

import os
import socket

from django_tasks import task

from swaps.runner import swap_run


@task(queue_name="swaps")
def swap_execute(swap_id: str) -> str | None:
    """Carry one swap through its states (queued by `swap_request` after its transaction commits)."""
    swap = swap_run(swap_id=swap_id, worker=f"{socket.gethostname()}:{os.getpid()}")
    return swap.state if swap else None
