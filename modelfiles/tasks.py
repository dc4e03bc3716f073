"""Background tasks of model files: a download runs on a queue of its own ("downloads"), since it holds its worker
for as long as the transfer takes."""

from __future__ import annotations

import os
import socket

from django_tasks import task

from modelfiles.services import download_run


@task(queue_name="downloads")
def download_execute(download_id: str, attempt: int) -> str | None:
    """Run one attempt of a download (queued after its request, or after a restart found it running)."""
    download = download_run(download_id=download_id, attempt=attempt, worker=f"{socket.gethostname()}:{os.getpid()}")
    return download.state if download else None
