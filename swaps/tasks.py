"""Background tasks of the swaps app."""

from __future__ import annotations

import os
import socket

from django_tasks import task

from swaps.runner import swap_run


@task()
def swap_execute(swap_id: str) -> str | None:
    """Carry one swap through its states (queued by `swap_request` after its transaction commits)."""
    swap = swap_run(swap_id=swap_id, worker=f"{socket.gethostname()}:{os.getpid()}")
    return swap.state if swap else None
