"""Background tasks of scheduled actions: the periodic tick (any queue's worker) and the runs ("actions" queue).

A run may wait minutes (for the swap lock, for its swap): it has a queue, and an embedded worker thread, of its own,
so it never holds up probe sweeps, webhook deliveries or the swaps themselves.
"""

from __future__ import annotations

from django_tasks import task

from actions.services import action_run_execute as run_execute
from actions.services import actions_tick as tick


@task()
def actions_tick(chain: bool = True) -> str:
    """Claim and queue the due occurrences; the chain's tick also queues its successor and tidies up."""
    return tick(chain=chain)


@task(queue_name="actions")
def action_run_execute(run_id: int) -> str | None:
    """Carry one claimed run through (queued after the claim commits)."""
    run = run_execute(run_id=run_id)
    return run.outcome if run else None
