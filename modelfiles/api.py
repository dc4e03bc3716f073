"""Model file routes: download a catalog model to its nodes, follow and cancel downloads, the nodes' disk."""

from __future__ import annotations

import uuid

from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.errors import HttpError

from accounts.auth import admin_auth, read_auth
from catalog.selectors import model_get
from modelfiles.schemas import DownloadAccepted, DownloadOut, NodeDiskOut, RefusalOut
from modelfiles.selectors import download_get, download_list
from modelfiles.services import DownloadRefused, download_cancel, download_out, download_request, node_disk_report

router = Router(tags=["model files"])


@router.post(
    "/models/{key}/download", response={202: DownloadAccepted, frozenset({404, 409}): RefusalOut}, auth=admin_auth
)
def post_download(request: HttpRequest, key: str) -> Status:
    """Download the model's repo into the HF cache of every node that runs it (202); 409 for a local model or when
    a download of it is already active."""
    entry = model_get(key=key)
    if entry is None:
        return Status(404, {"detail": f"no catalog entry with key {key!r}"})
    try:
        download = download_request(entry=entry, requested_by=request.auth.name)
    except DownloadRefused as exc:
        return Status(exc.status, {"detail": exc.detail})
    return Status(202, {"id": str(download.id), "state": download.state})


@router.get("/downloads", response=list[DownloadOut], auth=read_auth)
def get_downloads(
    request: HttpRequest, limit: int = Query(20, ge=1, le=200), model: str | None = Query(None, max_length=64)
) -> list[dict]:
    """Downloads, newest first."""
    return [download_out(download) for download in download_list(limit=limit, model_key=model)]


def _download_or_404(download_id: uuid.UUID):  # type: ignore[no-untyped-def]
    download = download_get(download_id=download_id)
    if download is None:
        raise HttpError(404, f"no download with id {download_id}")
    return download


@router.get("/downloads/{uuid:download_id}", response=DownloadOut, auth=read_auth)
def get_download(request: HttpRequest, download_id: uuid.UUID) -> dict:
    """One download: state, bytes done of bytes total, per node progress, error."""
    return download_out(_download_or_404(download_id))


@router.post(
    "/downloads/{uuid:download_id}/cancel",
    response={202: DownloadOut, frozenset({404, 409}): RefusalOut},
    auth=admin_auth,
)
def post_download_cancel(request: HttpRequest, download_id: uuid.UUID) -> Status:
    """Stop a download (202); the downloader on the nodes is killed. 409 when it has already ended."""
    download = _download_or_404(download_id)
    try:
        download = download_cancel(download=download, actor=request.auth.name)
    except DownloadRefused as exc:
        return Status(exc.status, {"detail": exc.detail})
    return Status(202, download_out(download))


@router.get("/nodes/disk", response=list[NodeDiskOut], auth=read_auth)
def get_nodes_disk(request: HttpRequest) -> list[dict]:
    """Per node: free bytes where the HF cache is, and each catalog HF model's bytes in it."""
    return node_disk_report()
