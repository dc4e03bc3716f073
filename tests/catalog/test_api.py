import pytest

from catalog.models import ModelEntry
from sparkcontrol.models import AuditEntry

pytestmark = pytest.mark.django_db


def test_list_needs_credentials(anon, reader, model_factory):
    model_factory("tiny")
    assert anon.get("/api/models").status_code == 401
    response = reader.get("/api/models")
    assert response.status_code == 200
    [item] = response.json()
    assert item["key"] == "tiny" and item["repo"] == "sim/tiny-model" and item["local"] is False
    assert item["served_model_name"] == "tiny" and item["knobs"]["max_model_len"] is None


def test_create_needs_admin_scope(reader, operator, admin_api):
    body = {"key": "new", "repo": "org/new"}
    assert reader.post("/api/models", body).status_code == 403
    assert operator.post("/api/models", body).status_code == 403
    response = admin_api.post("/api/models", body)
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "new"
    assert AuditEntry.objects.filter(action="catalog.create", target="new").exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"key": "x", "repo": "org/x", "local_path": "/models/x"}, "local_path"),
        ({"key": "x"}, "repo"),
        ({"key": "x", "local_path": "/models-evil/x"}, "local_path"),
        ({"key": "x", "local_path": "models/x"}, "local_path"),
        ({"key": "x", "repo": "org/x", "vllm_args": ["--served-model-name", "y"]}, "vllm_args"),
        ({"key": "x", "repo": "org/x", "nodes": 3}, "nodes"),
        ({"key": "bad key!", "repo": "org/x"}, "key"),
        ({"key": "x", "repo": "org/x", "knobs": {"gpu_memory_utilization": "lots"}}, "gpu_memory_utilization"),
        ({"key": "x", "repo": "org/x", "surprise": 1}, "surprise"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(admin_api, body, field):
    response = admin_api.post("/api/models", body)
    assert response.status_code == 422, response.content
    assert field in response.json()["detail"]
    assert ModelEntry.objects.count() == 0


def test_malformed_json_and_wrong_types_are_4xx(admin_api):
    response = admin_api.post("/api/models", raw="{not json")
    assert 400 <= response.status_code < 500
    assert "detail" in response.json()
    response = admin_api.post("/api/models", raw="[1, 2]")
    assert 400 <= response.status_code < 500


def test_oversize_body_is_413(admin_api):
    response = admin_api.post("/api/models", raw='{"key": "' + "x" * 300_000 + '"}')
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_knobs_update_and_owned_flags(admin_api, operator, model_factory):
    model_factory("tiny")
    body = {"knobs": {"gpu_memory_utilization": 0.6, "max_model_len": 8192}, "vllm_args": ["--enforce-eager"]}
    assert operator.put("/api/models/tiny/knobs", body).status_code == 403
    response = admin_api.put("/api/models/tiny/knobs", body)
    assert response.status_code == 200, response.content
    assert response.json()["knobs"]["max_model_len"] == 8192
    refused = admin_api.put("/api/models/tiny/knobs", {"vllm_args": ["--port=1"]})
    assert refused.status_code == 422 and "--port" in refused.json()["detail"]
    assert ModelEntry.objects.get(key="tiny").vllm_args == ["--enforce-eager"]
    assert admin_api.put("/api/models/nope/knobs", body).status_code == 404


def test_session_writes_need_csrf(staff_client):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.cookies = staff_client.cookies
    response = client.post("/api/models", data={"key": "x", "repo": "o/x"}, content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert client.get("/api/models").status_code == 200


def test_health_needs_no_credentials(anon):
    response = anon.get("/api/health")
    assert response.status_code == 200 and response.json()["database"] == "ok"
