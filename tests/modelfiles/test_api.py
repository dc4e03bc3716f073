"""The download routes: scopes, refusals, cancel of a queued download (no node is touched)."""

from __future__ import annotations

import uuid

import pytest

from cluster.models import SparkHost
from modelfiles.models import ModelDownload

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(db):  # type: ignore[no-untyped-def]
    SparkHost.objects.create(name="head", address="10.0.0.1", role="head")
    SparkHost.objects.create(name="worker", address="10.0.0.2", role="worker")


def test_request_get_list_and_cancel(hosts, model_factory, admin_api, reader, operator):
    model_factory("two", repo="sim/two", nodes=2, vllm_args=["--revision", "v1.2"])
    assert reader.post("/api/models/two/download").status_code == 403
    assert operator.post("/api/models/two/download").status_code == 403
    response = admin_api.post("/api/models/two/download")
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "state"} and body["state"] == "queued"
    download = reader.get(f"/api/downloads/{body['id']}").json()
    assert download["model"] == "two" and download["nodes"] == ["head", "worker"] and download["revision"] == "v1.2"
    assert (download["bytes_done"], download["bytes_total"], download["error"]) == (0, 0, None)
    assert [item["id"] for item in reader.get("/api/downloads").json()] == [body["id"]]
    again = admin_api.post("/api/models/two/download")
    assert again.status_code == 409 and "already queued" in again.json()["detail"]
    assert reader.post(f"/api/downloads/{body['id']}/cancel").status_code == 403
    cancelled = admin_api.post(f"/api/downloads/{body['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
    assert admin_api.post(f"/api/downloads/{body['id']}/cancel").status_code == 409
    assert admin_api.post("/api/models/two/download").status_code == 202  # the cancelled one is no longer active


def test_refusals(hosts, model_factory, admin_api, reader, tmp_path, settings):
    assert admin_api.post("/api/models/nope/download").status_code == 404
    assert reader.get(f"/api/downloads/{uuid.uuid4()}").status_code == 404
    assert reader.get("/api/downloads/not-a-uuid").status_code in (404, 422)
    settings.SPARKCONTROL = {**settings.SPARKCONTROL, "LOCAL_MODEL_ROOTS": [str(tmp_path)]}
    (tmp_path / "m").mkdir()
    model_factory("local", repo="", local_path=str(tmp_path / "m"))
    response = admin_api.post("/api/models/local/download")
    assert response.status_code == 409 and "local model" in response.json()["detail"]
    SparkHost.objects.filter(role="worker").update(enabled=False)
    model_factory("pair", repo="sim/pair", nodes=2)
    response = admin_api.post("/api/models/pair/download")
    assert response.status_code == 409 and "no enabled worker" in response.json()["detail"]
    assert not ModelDownload.objects.exists()
