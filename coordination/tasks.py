"""Background tasks of coordination: one webhook delivery attempt per task run (queue "webhooks")."""

from __future__ import annotations

from django_tasks import task


@task(queue_name="webhooks")
def webhook_deliver(delivery_id: int, attempt: int) -> str:
    """Make one attempt of a webhook delivery; the next one, if any, is enqueued with its backoff delay."""
    # Imported here: services enqueue this task, so a module-level import would be circular.
    from coordination.services import webhook_attempt

    return webhook_attempt(delivery_id=delivery_id, attempt=attempt)
