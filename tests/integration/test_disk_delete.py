"""`DELETE /api/models/{key}/disk`: removes a repo's HF cache on every Spark; never a local or served model."""

import os

import pytest

from swaps.models import ServingState

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _cache_dir(node, repo):  # type: ignore[no-untyped-def]
    return os.path.join(node.hf_hub, "models--" + repo.replace("/", "--"))


def test_disk_delete_removes_the_cache_on_every_node(topology, model_factory, admin_api, operator):
    topology.ensure_hf_repo("sim/old-model")
    model_factory("old", repo="sim/old-model")
    assert all(os.path.isdir(_cache_dir(node, "sim/old-model")) for node in topology.nodes)
    assert operator.delete("/api/models/old/disk").status_code == 403
    response = admin_api.delete("/api/models/old/disk")
    assert response.status_code == 202, response.content
    assert not any(os.path.exists(_cache_dir(node, "sim/old-model")) for node in topology.nodes)


def test_disk_delete_refuses_local_and_served_models(topology, model_factory, admin_api):
    local = topology.make_local_model("keep-me")
    model_factory("mine", repo="", local_path=local)
    response = admin_api.delete("/api/models/mine/disk")
    assert response.status_code == 409 and "never deleted" in response.json()["detail"]
    assert os.path.isdir(local)
    topology.ensure_hf_repo("sim/tiny-model")
    model_factory("live", repo="sim/tiny-model")
    ServingState.objects.update_or_create(pk=1, defaults={"model_key": "live"})
    response = admin_api.delete("/api/models/live/disk")
    assert response.status_code == 409 and "being served" in response.json()["detail"]
    assert os.path.isdir(_cache_dir(topology.head, "sim/tiny-model"))
    assert admin_api.delete("/api/models/nope/disk").status_code == 404
